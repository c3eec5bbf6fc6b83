// Warp-level tensor-core and async-copy primitives (sm_80+ PTX) shared by
// the attention kernels: ldmatrix fragment loads from shared memory, the
// m16n8k16 bf16 MMA with fp32 accumulation, and cp.async 16-byte copies
// from global to shared memory, and the online-softmax step of a tile.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace tandem::cuda {

__device__ inline uint32_t SmemAddr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

__device__ inline void LdMatrixX4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(p)));
}

__device__ inline void LdMatrixX4Trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(p)));
}

// c += a * b for one 16x8 tile (a: 16x16 row-major, b: 16x8 col-major).
__device__ inline void Mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16 bytes global -> shared, asynchronously; zero-filled when !valid (the
// V rows past the sequence must be zeros, not garbage: 0 * NaN is NaN).
__device__ inline void CpAsync16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SmemAddr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ inline void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ inline void CpAsyncWaitAll() { asm volatile("cp.async.wait_group 0;\n" ::); }
// Waits until at most `N` of this thread's most recent groups are pending.
template <int N>
__device__ inline void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ inline uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// One online-softmax step for the two rows (g and g + 8) a thread holds
// in m16n8 accumulators: `mx` comes in as this thread's maximum of the
// tile's (scaled, masked) scores per row; the quad's maxima are combined,
// the running max `m` advances, `alpha` is the factor the row's running
// sum and output are rescaled by, and `mx` leaves as the reference the
// tile's probabilities are exp2(s - mx) against. A row that has seen only
// masked positions keeps m = -inf; its reference is 0 so that exp2 gives
// 0, never NaN.
__device__ inline void OnlineSoftmaxStep(float (&m)[2], float (&mx)[2], float (&alpha)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffff, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffff, mx[r], 2));
    const float m_new = fmaxf(m[r], mx[r]);
    const float ref = m_new == -INFINITY ? 0.0f : m_new;
    alpha[r] = exp2f(m[r] - ref);
    m[r] = m_new;
    mx[r] = ref;
  }
}

}  // namespace tandem::cuda
