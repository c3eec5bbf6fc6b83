// Turning CUDA and cuBLAS errors into absl::Status at every call site.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tandem {

inline absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

inline absl::Status CublasStatus(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": cuBLAS status ", static_cast<int>(s)));
}

}  // namespace tandem

#define TANDEM_CUDA_RETURN_IF_ERROR(expr)                                          \
  do {                                                                             \
    ::absl::Status tandem_cuda_status_ = ::tandem::CudaStatus((expr), #expr);      \
    if (!tandem_cuda_status_.ok()) return tandem_cuda_status_;                     \
  } while (0)

#define TANDEM_CUBLAS_RETURN_IF_ERROR(expr)                                        \
  do {                                                                             \
    ::absl::Status tandem_cublas_status_ = ::tandem::CublasStatus((expr), #expr);  \
    if (!tandem_cublas_status_.ok()) return tandem_cublas_status_;                 \
  } while (0)
