// Small device helpers shared by the kernels: rounding like a bf16 Hugging
// Face model (every value a bf16 model hands from one op to the next is a
// bf16, so where tandem keeps fp32 it rounds at the same points, to
// nearest even) and a block-wide sum.
#pragma once

#include <cuda_bf16.h>

namespace tandem::cuda {

__device__ inline float RoundBf16(float v) { return __bfloat162float(__float2bfloat16(v)); }

// bf16(silu(g)) for a bf16 g: nn.SiLU on a bf16 tensor computes in fp32
// and rounds its output.
__device__ inline float SiluRounded(float g) { return RoundBf16(g / (1.0f + __expf(-g))); }

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024);
// every thread gets the result. `scratch` holds 32 floats of shared memory.
__device__ inline float BlockSum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  v = threadIdx.x < warps ? scratch[threadIdx.x] : 0.0f;
  if (warp == 0) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  const float r = scratch[0];
  __syncthreads();
  return r;
}

}  // namespace tandem::cuda
