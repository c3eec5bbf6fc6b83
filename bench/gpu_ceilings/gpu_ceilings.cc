#include "bench/gpu_ceilings/gpu_ceilings.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/model/dtype.h"

namespace tandem::bench {
namespace {

constexpr int kRuns = 12;    // the first two warm up
constexpr int kWarmup = 2;

absl::Status Cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

#define CEILING_CUDA(expr) \
  if (absl::Status s = Cuda((expr), #expr); !s.ok()) return s

// Device memory and events that outlive an early return.
struct Buffers {
  std::vector<void*> p;
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  ~Buffers() {
    for (void* q : p) cudaFree(q);
    if (e0 != nullptr) cudaEventDestroy(e0);
    if (e1 != nullptr) cudaEventDestroy(e1);
  }
  absl::Status Allocate(int n, size_t bytes) {
    for (int i = 0; i < n; ++i) {
      void* q = nullptr;
      CEILING_CUDA(cudaMalloc(&q, bytes));
      p.push_back(q);
    }
    CEILING_CUDA(cudaEventCreate(&e0));
    CEILING_CUDA(cudaEventCreate(&e1));
    return absl::OkStatus();
  }
};

}  // namespace

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

absl::StatusOr<double> CopyBandwidth() {
  const size_t bytes = size_t{2} << 30;
  Buffers b;
  if (absl::Status s = b.Allocate(2, bytes); !s.ok()) return s;
  CEILING_CUDA(cudaMemset(b.p[0], 0x5a, bytes));
  std::vector<double> t;
  for (int i = 0; i < kRuns; ++i) {
    CEILING_CUDA(cudaEventRecord(b.e0));
    CEILING_CUDA(cudaMemcpyAsync(b.p[(i + 1) % 2], b.p[i % 2], bytes, cudaMemcpyDeviceToDevice));
    CEILING_CUDA(cudaEventRecord(b.e1));
    CEILING_CUDA(cudaEventSynchronize(b.e1));
    float ms = 0;
    CEILING_CUDA(cudaEventElapsedTime(&ms, b.e0, b.e1));
    if (i >= kWarmup) t.push_back(ms / 1e3);
  }
  return 2.0 * static_cast<double>(bytes) / Median(t);
}

absl::StatusOr<double> GemmRate() {
  const int n = 8192;
  const size_t elems = size_t{n} * n;
  std::vector<uint16_t> host(elems);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (auto& h : host) h = FloatToBF16(dist(rng));
  Buffers b;
  if (absl::Status s = b.Allocate(3, elems * 2); !s.ok()) return s;
  CEILING_CUDA(cudaMemcpy(b.p[0], host.data(), elems * 2, cudaMemcpyHostToDevice));
  std::reverse(host.begin(), host.end());
  CEILING_CUDA(cudaMemcpy(b.p[1], host.data(), elems * 2, cudaMemcpyHostToDevice));
  cublasHandle_t h = nullptr;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return absl::InternalError("cublasCreate failed");
  const float alpha = 1, beta = 0;
  std::vector<double> t;
  absl::Status status;
  for (int i = 0; i < kRuns && status.ok(); ++i) {
    status = Cuda(cudaEventRecord(b.e0), "cudaEventRecord");
    if (status.ok() && cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, b.p[0], CUDA_R_16BF, n, b.p[1],
                                    CUDA_R_16BF, n, &beta, b.p[2], CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
      status = absl::InternalError("cublasGemmEx failed");
    }
    if (status.ok()) status = Cuda(cudaEventRecord(b.e1), "cudaEventRecord");
    if (status.ok()) status = Cuda(cudaEventSynchronize(b.e1), "cudaEventSynchronize");
    float ms = 0;
    if (status.ok()) status = Cuda(cudaEventElapsedTime(&ms, b.e0, b.e1), "cudaEventElapsedTime");
    if (status.ok() && i >= kWarmup) t.push_back(ms / 1e3);
  }
  cublasDestroy(h);
  if (!status.ok()) return status;
  return 2.0 * n * static_cast<double>(n) * n / Median(t);
}

}  // namespace tandem::bench
