#include "common/transport/cuda_block_copy.h"

#include "common/transport/kv_copy_items.h"

namespace tandem {
namespace {

constexpr int kThreads = kKvCopyThreads;
constexpr int kInFlight = kKvCopyInFlight;

// Work items (kv_copy_items.h): layer, pair, K then V, chunk of the block.
// Each thread block takes items blockIdx.x, blockIdx.x + gridDim.x, ...:
// the whole launch is one stream of equal items over a grid that fits the
// GPU at once, so the GPU drains once per launch, not once per layer.
// Within an item, consecutive threads touch consecutive 16-byte words on
// both sides (coalesced reads and writes, local or peer memory), and each
// thread loads all its words of the item (up to kInFlight) before it
// stores them: many loads in flight per SM, a block in one round trip.
__global__ void __launch_bounds__(kThreads) KvCopyKernel(const __grid_constant__ KvCopyParams p) {
  const KvCopyShape shape = MakeKvCopyShape(p.block_bytes, p.num_pairs, p.num_layers);
  for (uint64_t item = blockIdx.x; item < shape.items; item += gridDim.x) {
    const KvCopyItem it = KvCopyItemAt(shape, item);
    const int32_t src_block = p.table != nullptr ? p.table[2 * it.pair] : p.pairs[2 * it.pair];
    const int32_t dst_block = p.table != nullptr ? p.table[2 * it.pair + 1] : p.pairs[2 * it.pair + 1];
    const KvCopyParams::Layer& l = p.layers[it.layer];
    const uint4* src = static_cast<const uint4*>(it.value ? l.src_v : l.src_k) +
                       static_cast<uint64_t>(src_block) * shape.words_per_block + it.first_word;
    uint4* dst = static_cast<uint4*>(it.value ? l.dst_v : l.dst_k) +
                 static_cast<uint64_t>(dst_block) * shape.words_per_block + it.first_word;
    // it.words <= kThreads * kInFlight: one round.
    uint4 w[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const uint64_t i = threadIdx.x + static_cast<uint64_t>(u) * kThreads;
      if (i < it.words) w[u] = __ldcs(src + i);
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const uint64_t i = threadIdx.x + static_cast<uint64_t>(u) * kThreads;
      if (i < it.words) dst[i] = w[u];
    }
  }
}

}  // namespace

bool KvBlockCopyAligned(const void* src_k, const void* src_v, const void* dst_k, const void* dst_v,
                        uint64_t block_bytes) {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return block_bytes % 16 == 0 && aligned(src_k) && aligned(src_v) && aligned(dst_k) && aligned(dst_v);
}

cudaError_t KvCopyMaxCtas(int* ctas) {
  int device = 0, sms = 0, per_sm = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, KvCopyKernel, kThreads, 0);
  if (e != cudaSuccess) return e;
  *ctas = sms * (per_sm > 0 ? per_sm : 1);
  return cudaSuccess;
}

cudaError_t LaunchKvCopy(const KvCopyParams& p, int max_ctas, cudaStream_t stream) {
  if (p.num_pairs <= 0 || p.num_layers <= 0 || p.block_bytes < 16) return cudaSuccess;
  if (p.num_layers > kKvCopyMaxLayers || (p.table == nullptr && p.num_pairs > kKvCopyInlinePairs)) {
    return cudaErrorInvalidValue;
  }
  const uint64_t items = MakeKvCopyShape(p.block_bytes, p.num_pairs, p.num_layers).items;
  const uint64_t cap = static_cast<uint64_t>(max_ctas > 0 ? max_ctas : 1);
  const uint64_t grid = items < cap ? items : cap;
  // cudaLaunchKernel returns this launch's error itself (no reliance on
  // the thread's last error, which other calls may have set); a failed
  // launch's error is cleared so that it does not surface in later checks.
  void* args[] = {const_cast<KvCopyParams*>(&p)};
  const cudaError_t e = cudaLaunchKernel(reinterpret_cast<const void*>(&KvCopyKernel),
                                         dim3(static_cast<unsigned>(grid)), dim3(kThreads), args, 0, stream);
  if (e != cudaSuccess) cudaGetLastError();
  return e;
}

}  // namespace tandem
