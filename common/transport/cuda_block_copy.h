// The gather kernel of the CUDA IPC transport: one launch copies the K and
// V blocks of a list of layers between two pools, by a (source block,
// destination block) table. One launch for many layers, because every
// launch costs microseconds of host time and a wave tail on the GPU (per
// layer, an 8k-token prompt's copies reached only ~65% of a memcpy's
// bandwidth); one launch for all blocks, because a scattered prompt has
// hundreds of runs and one cudaMemcpyAsync per run costs more in calls than
// in bytes. The bytes move by Hopper bulk copies (TMA, sm_90), through
// shared memory. CUDA builds only; the kernel is in cuda_block_copy.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace tandem {

// Layers per launch: their base pointers travel in the kernel parameters.
inline constexpr int kKvCopyMaxLayers = 32;
// Block pairs carried in the kernel parameters themselves (no upload);
// longer tables are read from device memory.
inline constexpr int kKvCopyInlinePairs = 256;

// Everything one launch needs, passed by value as the kernel's parameters
// (__grid_constant__: read in place from the constant bank, no copy per
// thread). Kept under the classic 4 KB parameter limit, so it neither
// depends on CUDA 12.1's large parameters nor pays their launch cost.
struct KvCopyParams {
  struct Layer {
    const void* src_k;
    const void* src_v;
    void* dst_k;
    void* dst_v;
  };
  // Block b of layer layers[i]'s K array is at layers[i].src_k + b * block_bytes.
  Layer layers[kKvCopyMaxLayers];
  // table == nullptr: the pairs are here, pairs[2i] the source block and
  // pairs[2i + 1] the destination block of pair i (num_pairs <= kKvCopyInlinePairs).
  int32_t pairs[2 * kKvCopyInlinePairs];
  // Otherwise 2 * num_pairs ints in device memory, laid out the same way;
  // it must stay valid until the launch has run (stream order).
  const int32_t* table;
  uint64_t block_bytes;
  int32_t num_pairs;
  int32_t num_layers;  // entries of `layers` used, 1..kKvCopyMaxLayers
};
static_assert(sizeof(KvCopyParams) <= 4000, "kernel parameters over the classic 4 KB limit");

// Copies, for each of p.layers[0..num_layers), K and V of every pair. All
// pointers and block_bytes must be multiples of 16 (KvBlockCopyAligned).
// `max_ctas` (> 0, KvCopyMaxCtas) caps the grid: the kernel's blocks stride
// over the work, so one launch of any size keeps the whole GPU busy to its
// last block instead of ending each layer in a wave tail. Returns the
// launch error.
cudaError_t LaunchKvCopy(const KvCopyParams& p, int max_ctas, cudaStream_t stream);

// The grid that fills the current device once (its SMs times the kernel's
// resident blocks per SM). Also sets the kernel's shared-memory size on the
// current device: call it there before the first LaunchKvCopy.
cudaError_t KvCopyMaxCtas(int* ctas);

// Whether LaunchKvCopy may be used for these addresses (16-byte words).
bool KvBlockCopyAligned(const void* src_k, const void* src_v, const void* dst_k, const void* dst_v,
                        uint64_t block_bytes);

}  // namespace tandem
