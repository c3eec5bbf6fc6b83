// What tandem-transfer-bench measures the KV transports against, in the
// same run on the same GPU: device-to-device cudaMemcpy (one copy, by the
// GPU's and by the host's clock; k back to back) and the CUDA IPC gather
// kernel alone. Device runs only; CI compiles it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/engine/cuda/cuda_kv_pool.h"

namespace tandem {

// Device-to-device copy of `bytes` (median of repeats), bytes/s: by the
// GPU's clock (events around the copy: the device's bandwidth) and by the
// host's (cudaMemcpyAsync until cudaStreamSynchronize returns: what a
// host thread that asks for a copy and waits for it sees, launch and
// wake-up included, as a transfer's wall time does).
struct CopyRate {
  double gpu = 0, wall = 0;
};
absl::StatusOr<CopyRate> DeviceCopyBandwidth(size_t bytes, int repeats);

// `k` device-to-device copies of `bytes`, each between its own pair of
// buffers, back to back on one stream; bytes/s by the GPU's clock (the
// baseline of transfers in flight at once).
absl::StatusOr<double> BackToBackCopyBandwidth(size_t bytes, int k, int repeats);

// The CUDA IPC transport's gather kernel alone (cuda_block_copy.h), all
// layers in one launch from blocks `s` of `src` to blocks `d` of `dst` (two
// pools of this process), bytes/s by the GPU's clock: how much of a
// transfer is the copy itself.
absl::StatusOr<double> GatherKernelBandwidth(CudaKvPool& src, CudaKvPool& dst, const std::vector<int32_t>& s,
                                             const std::vector<int32_t>& d, int repeats);

}  // namespace tandem
