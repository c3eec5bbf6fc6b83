// The engine's big GEMMs (more rows than SmallGemm takes) on cuBLASLt:
// y[rows][n] = x[rows][k] . w[n][k]^T, bf16 inputs, fp32 accumulation, y
// bf16 or fp32. Each (rows, shape) gets its descriptors and algorithm
// once: the GemmAlgoTable's algorithm for that shape when it has one
// that runs it (cublasLtMatmulAlgoCheck), else cuBLASLt's first
// heuristic choice. Both are fixed per shape, so eager runs, graph
// captures and other processes with the same table compute the same bits.
//
// Runs on the caller's stream with the caller's workspace, so it never
// allocates and may be captured in a CUDA graph. One thread at a time.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/engine/cuda/gemm_algo_table.h"

namespace tandem {

class LtGemm {
 public:
  LtGemm() = default;
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // `workspace` (device memory of `workspace_bytes`) must outlive this.
  absl::Status Init(void* workspace, size_t workspace_bytes, GemmAlgoTable table);

  absl::Status Run(const __nv_bfloat16* x, int64_t rows, const __nv_bfloat16* w, const GemmShape& shape, void* y,
                   cudaStream_t stream);

  // For the tuner: up to `max_count` algorithms cuBLASLt's heuristic
  // offers for this shape, best guess first (what Run uses untuned).
  absl::StatusOr<std::vector<GemmAlgo>> Candidates(int64_t rows, const GemmShape& shape, int max_count);
  // For the tuner's wider search: the variants of `base` (its algorithm,
  // tile and stages) that run this shape: split-K 1-4 with each reduction
  // scheme the algorithm supports, CTA swizzling off and on, every custom
  // option (at most 16), and cluster shapes auto, 1x1, 2x1 and 1x2.
  absl::StatusOr<std::vector<GemmAlgo>> Variants(int64_t rows, const GemmShape& shape, const GemmAlgo& base);
  // Runs `algo`, rebuilt from its GemmAlgo form as a table entry would
  // be; an error when it cannot run this shape.
  absl::Status RunWith(const GemmAlgo& algo, const __nv_bfloat16* x, int64_t rows, const __nv_bfloat16* w,
                       const GemmShape& shape, void* y, cudaStream_t stream);


 private:
  // The descriptors of one (rows, shape) and the algorithm chosen for it.
  struct Plan {
    ~Plan();
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo = {};
  };
  absl::StatusOr<Plan*> PlanFor(int64_t rows, const GemmShape& shape);
  absl::StatusOr<std::unique_ptr<Plan>> Describe(int64_t rows, const GemmShape& shape);
  // cuBLASLt's heuristic choices for `plan`, best guess first.
  absl::StatusOr<std::vector<GemmAlgo>> Heuristic(const Plan& plan, int64_t rows, const GemmShape& shape,
                                                  int max_count);
  // `algo` as a cublasLtMatmulAlgo_t, checked to run `plan`'s shape
  // within the workspace.
  absl::StatusOr<cublasLtMatmulAlgo_t> Build(const GemmAlgo& algo, const Plan& plan, const GemmShape& shape);
  absl::Status Matmul(const Plan& plan, const cublasLtMatmulAlgo_t& algo, const __nv_bfloat16* x,
                      const __nv_bfloat16* w, void* y, cudaStream_t stream);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  GemmAlgoTable table_;
  std::map<std::pair<int64_t, GemmShape>, std::unique_ptr<Plan>> plans_;
  std::set<GemmShape> warned_;  // shapes whose tuned algorithm failed a check
};

// Loads the table at `path` for device ordinal `device`. A table tuned on
// another kind of GPU (or another cuBLASLt) is logged and left unused:
// its choices would not be the fast ones there.
absl::StatusOr<GemmAlgoTable> LoadGemmAlgoTableForDevice(const std::string& path, int device);

}  // namespace tandem
