#include "bench/transfer_bench/copy_baselines.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "absl/cleanup/cleanup.h"
#include "absl/time/clock.h"
#include "bench/gpu_ceilings/gpu_ceilings.h"
#include "common/engine/cuda/cuda_check.h"
#include "common/engine/cuda/device_buffer.h"
#include "common/transport/cuda_block_copy.h"
#include "common/util/status_macros.h"

namespace tandem {

using bench::Median;

namespace {

// Median GPU seconds (events around it on the default stream) of what
// `enqueue` queues there, over `repeats` runs after one warm-up.
template <typename Enqueue>
absl::StatusOr<double> MedianGpuSeconds(int repeats, Enqueue enqueue) {
  cudaEvent_t e[2] = {nullptr, nullptr};
  absl::Cleanup destroy = [&] {
    for (cudaEvent_t x : e) {
      if (x != nullptr) cudaEventDestroy(x);
    }
  };
  for (cudaEvent_t& x : e) TANDEM_CUDA_RETURN_IF_ERROR(cudaEventCreate(&x));
  std::vector<double> secs;
  for (int r = 0; r <= repeats; ++r) {
    TANDEM_CUDA_RETURN_IF_ERROR(cudaEventRecord(e[0]));
    TANDEM_CUDA_RETURN_IF_ERROR(enqueue());
    TANDEM_CUDA_RETURN_IF_ERROR(cudaEventRecord(e[1]));
    TANDEM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(e[1]));
    float ms = 0;
    TANDEM_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, e[0], e[1]));
    if (r > 0 && ms > 0) secs.push_back(ms / 1e3);
  }
  return Median(secs);
}

}  // namespace

absl::StatusOr<CopyRate> DeviceCopyBandwidth(size_t bytes, int repeats) {
  DeviceBuffer a, b;
  TANDEM_RETURN_IF_ERROR(a.Allocate(bytes));
  TANDEM_RETURN_IF_ERROR(b.Allocate(bytes));
  TANDEM_ASSIGN_OR_RETURN(const double gpu, MedianGpuSeconds(repeats, [&] {
                            return cudaMemcpy(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice);
                          }));
  std::vector<double> wall;
  for (int r = 0; r <= repeats; ++r) {
    const absl::Time start = absl::Now();
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, 0));
    TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(0));
    if (r > 0) wall.push_back(absl::ToDoubleSeconds(absl::Now() - start));
  }
  const double wall_sec = Median(wall);
  return CopyRate{gpu > 0 ? static_cast<double>(bytes) / gpu : 0,
                  wall_sec > 0 ? static_cast<double>(bytes) / wall_sec : 0};
}

absl::StatusOr<double> GatherKernelBandwidth(CudaKvPool& src, CudaKvPool& dst, const std::vector<int32_t>& s,
                                             const std::vector<int32_t>& d, int repeats) {
  KvCopyParams p{};
  const int layers = std::min(src.layout().num_layers, kKvCopyMaxLayers);
  for (int l = 0; l < layers; ++l) {
    p.layers[l] = {src.KeyBlock(l, 0), src.ValueBlock(l, 0), dst.KeyBlock(l, 0), dst.ValueBlock(l, 0)};
  }
  p.num_layers = layers;
  p.num_pairs = static_cast<int32_t>(s.size());
  p.block_bytes = static_cast<uint64_t>(src.layout().block_bytes());
  std::vector<int32_t> pairs;
  for (size_t i = 0; i < s.size(); ++i) pairs.insert(pairs.end(), {s[i], d[i]});
  DeviceBuffer table;
  if (s.size() <= static_cast<size_t>(kKvCopyInlinePairs)) {
    std::copy(pairs.begin(), pairs.end(), p.pairs);
  } else {
    TANDEM_RETURN_IF_ERROR(table.Allocate(pairs.size() * sizeof(int32_t)));
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpy(table.get(), pairs.data(), pairs.size() * sizeof(int32_t),
                                           cudaMemcpyHostToDevice));
    p.table = table.as<int32_t>();
  }
  int ctas = 0;
  TANDEM_CUDA_RETURN_IF_ERROR(KvCopyMaxCtas(&ctas));
  const double bytes = 2.0 * static_cast<double>(s.size()) * src.layout().block_bytes() * layers;
  TANDEM_ASSIGN_OR_RETURN(const double sec, MedianGpuSeconds(repeats, [&] { return LaunchKvCopy(p, ctas, 0); }));
  return sec > 0 ? bytes / sec : 0;
}

absl::StatusOr<double> BackToBackCopyBandwidth(size_t bytes, int k, int repeats) {
  std::vector<DeviceBuffer> a(static_cast<size_t>(k)), b(static_cast<size_t>(k));
  for (int j = 0; j < k; ++j) {
    TANDEM_RETURN_IF_ERROR(a[static_cast<size_t>(j)].Allocate(bytes));
    TANDEM_RETURN_IF_ERROR(b[static_cast<size_t>(j)].Allocate(bytes));
  }
  TANDEM_ASSIGN_OR_RETURN(const double sec, MedianGpuSeconds(repeats, [&]() -> cudaError_t {
                            for (int j = 0; j < k; ++j) {
                              const cudaError_t e = cudaMemcpyAsync(b[static_cast<size_t>(j)].get(),
                                                                    a[static_cast<size_t>(j)].get(), bytes,
                                                                    cudaMemcpyDeviceToDevice, 0);
                              if (e != cudaSuccess) return e;
                            }
                            return cudaSuccess;
                          }));
  return sec > 0 ? static_cast<double>(k) * static_cast<double>(bytes) / sec : 0;
}

}  // namespace tandem
