#include "common/transport/cuda_block_copy.h"

#include "common/transport/kv_copy_items.h"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#error "the KV gather kernel moves bytes by Hopper bulk copies (TMA): build for sm_90 or later"
#endif

namespace tandem {
namespace {

// Shared-memory stages per thread block, each one work item (32 KB): 3
// per block and 2 blocks per SM keep up to 6 items of reads in flight per
// SM, where a copy at the full HBM rate needs about one.
constexpr int kStages = 3;
constexpr uint32_t kStageBytes = static_cast<uint32_t>(kKvCopyItemWords * 16);
constexpr size_t kSmemBytes = size_t{kStages} * kStageBytes;

__device__ inline uint32_t SmemAddr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

// The Hopper bulk-copy (TMA) primitives the kernel uses (PTX ISA 8.0, sm_90).
__device__ inline void BarrierInit(uint64_t* bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(SmemAddr(bar)));
}
__device__ inline void BarrierExpect(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(SmemAddr(bar)), "r"(bytes) : "memory");
}
__device__ inline void BarrierWait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(SmemAddr(bar)), "r"(parity)
        : "memory");
  }
}
// global -> shared, completion counted in bytes on `bar`.
__device__ inline void BulkLoad(void* smem, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   SmemAddr(smem)),
               "l"(src), "r"(bytes), "r"(SmemAddr(bar))
               : "memory");
}
// shared -> global, as its own bulk group.
__device__ inline void BulkStore(void* dst, const void* smem, uint32_t bytes) {
  asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;\n" ::"l"(dst), "r"(SmemAddr(smem)),
               "r"(bytes)
               : "memory");
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}
// Until at most N of this thread's bulk stores still read shared memory.
template <int N>
__device__ inline void BulkStoresRead() {
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
}
__device__ inline void BulkStoresDone() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }

// Work items (kv_copy_items.h): layer, pair, K then V, chunk of the block.
// Thread block b takes items b, b + gridDim.x, ...: the whole launch is one
// stream of equal items over a grid that fits the GPU at once, so the GPU
// drains once per launch, not once per layer. One thread per block drives
// the SM's copy engine (TMA): it bulk-loads items into a ring of
// shared-memory stages and bulk-stores each one out as soon as it has
// landed; a stage is refilled once the store before the latest has read
// it, so loads, stores and the next items' address arithmetic overlap.
// No register or thread moves a byte, which is what lets the copy run at
// a device-to-device memcpy's rate (the copy by threads reached ~85% of
// it).
__global__ void __launch_bounds__(1) KvCopyKernel(const __grid_constant__ KvCopyParams p) {
  extern __shared__ __align__(128) unsigned char stage[];
  __shared__ __align__(8) uint64_t landed[kStages];
  __shared__ void* dst_of[kStages];
  __shared__ uint32_t bytes_of[kStages];
  const KvCopyShape shape = MakeKvCopyShape(p.block_bytes, p.num_pairs, p.num_layers);
  const uint64_t first = blockIdx.x, step = gridDim.x;
  if (first >= shape.items) return;
  const uint64_t mine = (shape.items - first + step - 1) / step;
  for (int s = 0; s < kStages; ++s) BarrierInit(&landed[s]);
  // The barriers' initialization, visible to the copy engine.
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");

  auto load = [&](uint64_t k) {
    const KvCopyItem it = KvCopyItemAt(shape, first + k * step);
    const int32_t src_block = p.table != nullptr ? p.table[2 * it.pair] : p.pairs[2 * it.pair];
    const int32_t dst_block = p.table != nullptr ? p.table[2 * it.pair + 1] : p.pairs[2 * it.pair + 1];
    const KvCopyParams::Layer& l = p.layers[it.layer];
    const uint4* src = static_cast<const uint4*>(it.value ? l.src_v : l.src_k) +
                       static_cast<uint64_t>(src_block) * shape.words_per_block + it.first_word;
    uint4* dst = static_cast<uint4*>(it.value ? l.dst_v : l.dst_k) +
                 static_cast<uint64_t>(dst_block) * shape.words_per_block + it.first_word;
    const int s = static_cast<int>(k % kStages);
    const uint32_t bytes = static_cast<uint32_t>(it.words * 16);
    dst_of[s] = dst;
    bytes_of[s] = bytes;
    BarrierExpect(&landed[s], bytes);
    BulkLoad(stage + s * kStageBytes, src, bytes, &landed[s]);
  };

  for (uint64_t k = 0; k < mine && k < kStages; ++k) load(k);
  for (uint64_t k = 0; k < mine; ++k) {
    const int s = static_cast<int>(k % kStages);
    BarrierWait(&landed[s], static_cast<uint32_t>((k / kStages) & 1));
    BulkStore(dst_of[s], stage + s * kStageBytes, bytes_of[s]);
    // Refill the previous item's stage: its store must have read it (the
    // one just issued may still be reading its own).
    if (k >= 1 && k - 1 + kStages < mine) {
      BulkStoresRead<1>();
      load(k - 1 + kStages);
    }
  }
  // The stores read shared memory until done; the block's shared memory
  // must outlive them.
  BulkStoresDone();
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
  if (e == cudaSuccess) {
    e = cudaFuncSetAttribute(KvCopyKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmemBytes));
  }
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, KvCopyKernel, 1, kSmemBytes);
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
                                         dim3(static_cast<unsigned>(grid)), dim3(1), args, kSmemBytes, stream);
  if (e != cudaSuccess) cudaGetLastError();
  return e;
}

}  // namespace tandem
