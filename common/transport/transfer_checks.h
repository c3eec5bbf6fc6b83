// The checks every transport makes on a transfer, in one place: the
// destination blocks against the pool descriptor (in range, no block twice,
// and every layer's base + (block + 1) * stride representable, so a forged
// descriptor cannot make an address wrap), and the transfer's deadline and
// finish timeout.
// Plain C++ (no UCX/CUDA), so the fuzz build links it.
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

struct KvTransferSpec;

// INVALID_ARGUMENT naming the block when one is outside [0, num_blocks),
// appears twice, or its byte range in some layer overflows 64 bits.
absl::Status CheckDestinationBlocks(const v1::KvPoolDescriptor& remote, std::span<const int32_t> dst_blocks);

// DEADLINE_EXCEEDED once the transfer's deadline passed (`now` for tests).
// Every transport checks it before issuing a write: past the deadline the
// destination may already be another request's.
absl::Status CheckTransferDeadline(const KvTransferSpec& spec, absl::Time now = absl::Now());

// When a Finish that starts at `now` must give up waiting for its writes to
// be confirmed: the transfer's deadline or `now + spec.finish_timeout`,
// whichever comes first. Sets `*by_timeout` to whether the timeout is the
// earlier one (the failure is then the peer's: UNAVAILABLE, not the
// request's DEADLINE_EXCEEDED).
absl::Time FinishDeadline(const KvTransferSpec& spec, absl::Time now, bool* by_timeout);

// UNAVAILABLE: the peer did not confirm the transfer's writes within its
// finish timeout.
absl::Status FinishTimedOut(const KvTransferSpec& spec);

}  // namespace tandem
