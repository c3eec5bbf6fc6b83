// The checks every transport makes on a transfer, in one place, so that
// each transport only decides how to react (drain, drop the connection,
// wait for queued copies) and every one refuses and reports alike:
// - before it starts: the destination blocks against the pool descriptor
//   (in range, no block twice, and every layer's base + (block + 1) *
//   stride representable, so a forged descriptor cannot make an address
//   wrap) and the source blocks against the local pool (CheckTransfer in
//   kv_transport.h runs both with the handshake);
// - on every SendLayer: the transfer still open, the layer in range, the
//   deadline not passed (nothing is written past it: the destination may
//   be another request's by then);
// - in Finish: how long to wait for the writes to be confirmed (the
//   deadline or the finish timeout, whichever comes first) and what to
//   report when that wait runs out.
// Plain C++ (no UCX/CUDA), so the fuzz build links it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

class KvPoolView;
struct KvTransferSpec;

// What every ExportPool checks first: INVALID_ARGUMENT "cannot export an
// empty KV pool over <transport> (...)" for a pool with no layer, no block
// or no bytes per block (its descriptor would describe nothing a peer could
// write).
absl::Status CheckExportablePool(KvPoolView& pool, std::string_view transport);

// INVALID_ARGUMENT naming the block when one is outside [0, num_blocks),
// appears twice, or its byte range in some layer overflows 64 bits.
absl::Status CheckDestinationBlocks(const v1::KvPoolDescriptor& remote, std::span<const int32_t> dst_blocks);

// FAILED_PRECONDITION unless `dest` was exported over `transport` (each
// transport's StartTransfer takes only its own descriptors; a composite
// hands each part the offer it chose).
absl::Status CheckDescriptorTransport(const v1::KvPoolDescriptor& dest, std::string_view transport);

// INVALID_ARGUMENT unless the spec names as many source blocks as
// destinations and every source block is in [0, local_num_blocks).
absl::Status CheckSourceBlocks(const KvTransferSpec& spec, int32_t local_num_blocks);

// INVALID_ARGUMENT "<transfer>: layer L out of range" unless
// 0 <= layer < num_layers. `transfer` names the transfer in errors
// ("KV transfer t1 to decode worker d0 (staged UCX)").
absl::Status CheckLayer(std::string_view transfer, int layer, int num_layers);

// Whether SendLayer may still write, from the transfer's outcome (empty
// while undecided): OK while undecided, the failure once it failed,
// FAILED_PRECONDITION once Finish succeeded.
absl::Status CheckStillSending(std::string_view transfer, const std::optional<absl::Status>& outcome);

// DEADLINE_EXCEEDED "<transfer> missed its deadline".
absl::Status MissedDeadline(std::string_view transfer);

// Whether the transfer's deadline passed by `now`.
bool PastDeadline(const KvTransferSpec& spec, absl::Time now = absl::Now());

// DEADLINE_EXCEEDED ("KV transfer <id> missed its deadline") once the
// transfer's deadline passed (`now` for tests). The senders check it
// before issuing a write: past the deadline the destination may already be
// another request's. (Staged UCX leaves it to the decode side's write gate,
// which turns a late chunk away without dropping the shared connection.)
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

// What a Finish reports when its wait reached FinishDeadline's bound
// unconfirmed: FinishTimedOut when the finish timeout was the bound
// (`by_timeout`), else MissedDeadline(transfer).
absl::Status FinishExpired(const KvTransferSpec& spec, bool by_timeout, std::string_view transfer);

}  // namespace tandem
