// One kernel launch that copies one layer's K and V blocks between two
// pools by a (source block, destination block) table: what the CUDA IPC
// transport uses when a request's blocks form many short runs, where one
// cudaMemcpyAsync per run would cost more in launches than in bytes.
// CUDA builds only; the kernel is in cuda_block_copy.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace tandem {

// `table` (device memory) holds `n` pairs: table[2i] the source block,
// table[2i + 1] the destination block. Each block is `block_bytes` bytes at
// base + block * block_bytes. Requires block_bytes and all four bases to be
// multiples of 16 (the kernel moves 16-byte words). Returns the launch error.
cudaError_t LaunchKvBlockCopy(const int32_t* table, int32_t n, const void* src_k, const void* src_v, void* dst_k,
                              void* dst_v, uint64_t block_bytes, cudaStream_t stream);

// Whether LaunchKvBlockCopy may be used for these addresses.
bool KvBlockCopyAligned(const void* src_k, const void* src_v, const void* dst_k, const void* dst_v,
                        uint64_t block_bytes);

}  // namespace tandem
