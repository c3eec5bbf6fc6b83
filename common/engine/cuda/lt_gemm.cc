#include "common/engine/cuda/lt_gemm.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/engine/cuda/cuda_check.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

// Distinct (rows, shape) plans kept: decode uses ~15 row counts, prefill
// any; past this the cache starts over (a plan is a few host descriptors
// and one heuristic query).
constexpr size_t kMaxPlans = 2048;

cudaDataType_t OutType(const GemmShape& s) { return s.out_f32 ? CUDA_R_32F : CUDA_R_16BF; }

template <typename T>
absl::Status SetConfig(cublasLtMatmulAlgo_t* algo, cublasLtMatmulAlgoConfigAttributes_t attr, T value) {
  return CublasStatus(cublasLtMatmulAlgoConfigSetAttribute(algo, attr, &value, sizeof(value)),
                      "cublasLtMatmulAlgoConfigSetAttribute");
}

template <typename T>
absl::Status GetConfig(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attr, T* value) {
  size_t written = 0;
  return CublasStatus(cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, value, sizeof(T), &written),
                      "cublasLtMatmulAlgoConfigGetAttribute");
}

absl::StatusOr<GemmAlgo> ToGemmAlgo(const cublasLtMatmulAlgo_t& algo) {
  GemmAlgo a;
  TANDEM_RETURN_IF_ERROR(GetConfig(algo, CUBLASLT_ALGO_CONFIG_ID, &a.id));
  TANDEM_RETURN_IF_ERROR(GetConfig(algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &a.tile));
  TANDEM_RETURN_IF_ERROR(GetConfig(algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &a.stages));
  TANDEM_RETURN_IF_ERROR(GetConfig(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &a.splitk));
  TANDEM_RETURN_IF_ERROR(GetConfig(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &a.reduction));
  TANDEM_RETURN_IF_ERROR(GetConfig(algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &a.swizzle));
  TANDEM_RETURN_IF_ERROR(GetConfig(algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, &a.custom));
  TANDEM_RETURN_IF_ERROR(GetConfig(algo, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID, &a.inner_shape));
  TANDEM_RETURN_IF_ERROR(GetConfig(algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &a.cluster_shape));
  return a;
}

}  // namespace

LtGemm::Plan::~Plan() {
  if (d != nullptr) cublasLtMatrixLayoutDestroy(d);
  if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
  if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
  if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
}

LtGemm::~LtGemm() {
  plans_.clear();
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

absl::Status LtGemm::Init(void* workspace, size_t workspace_bytes, GemmAlgoTable table) {
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&handle_));
  workspace_ = workspace;
  workspace_bytes_ = workspace_bytes;
  table_ = std::move(table);
  return absl::OkStatus();
}

// cuBLASLt is column-major: y^T[n][rows] = w[n][k] . x^T[k][rows], so A is
// w stored as k x n (ld k) and transposed, B is x as k x rows (ld k), D is
// y as n x rows (ld n). The same call cublasGemmEx(T, N, n, rows, k) makes.
absl::StatusOr<std::unique_ptr<LtGemm::Plan>> LtGemm::Describe(int64_t rows, const GemmShape& shape) {
  auto plan = std::make_unique<Plan>();
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
  TANDEM_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa)));
  TANDEM_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof(transb)));
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, shape.k, shape.n, shape.k));
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_16BF, shape.k, rows, shape.k));
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->d, OutType(shape), shape.n, rows, shape.n));
  return plan;
}

absl::StatusOr<cublasLtMatmulAlgo_t> LtGemm::Build(const GemmAlgo& a, const Plan& plan, const GemmShape& shape) {
  cublasLtMatmulAlgo_t algo;
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulAlgoInit(handle_, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF,
                                                       CUDA_R_16BF, OutType(shape), OutType(shape), a.id, &algo));
  TANDEM_RETURN_IF_ERROR(SetConfig(&algo, CUBLASLT_ALGO_CONFIG_TILE_ID, a.tile));
  TANDEM_RETURN_IF_ERROR(SetConfig(&algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, a.stages));
  TANDEM_RETURN_IF_ERROR(SetConfig(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, a.splitk));
  TANDEM_RETURN_IF_ERROR(SetConfig(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, a.reduction));
  TANDEM_RETURN_IF_ERROR(SetConfig(&algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, a.swizzle));
  TANDEM_RETURN_IF_ERROR(SetConfig(&algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, a.custom));
  TANDEM_RETURN_IF_ERROR(SetConfig(&algo, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID, a.inner_shape));
  TANDEM_RETURN_IF_ERROR(SetConfig(&algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, a.cluster_shape));
  cublasLtMatmulHeuristicResult_t check = {};
  TANDEM_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulAlgoCheck(handle_, plan.desc, plan.a, plan.b, plan.d, plan.d, &algo, &check));
  if (check.workspaceSize > workspace_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat("cuBLASLt algorithm ", a.id, " needs ", check.workspaceSize,
                                                     " bytes of workspace, more than the ", workspace_bytes_));
  }
  return algo;
}

absl::StatusOr<std::vector<GemmAlgo>> LtGemm::Candidates(int64_t rows, const GemmShape& shape, int max_count) {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Plan> plan, Describe(rows, shape));
  return Heuristic(*plan, rows, shape, max_count);
}

absl::StatusOr<std::vector<GemmAlgo>> LtGemm::Heuristic(const Plan& plan, int64_t rows, const GemmShape& shape,
                                                        int max_count) {
  cublasLtMatmulPreference_t pref = nullptr;
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<size_t>(max_count));
  int found = 0;
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                           &workspace_bytes_, sizeof(workspace_bytes_));
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatmulAlgoGetHeuristic(handle_, plan.desc, plan.a, plan.b, plan.d, plan.d, pref, max_count,
                                        results.data(), &found);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  TANDEM_RETURN_IF_ERROR(CublasStatus(st, "cublasLtMatmulAlgoGetHeuristic"));
  std::vector<GemmAlgo> out;
  for (int i = 0; i < found; ++i) {
    if (results[static_cast<size_t>(i)].state != CUBLAS_STATUS_SUCCESS) continue;
    TANDEM_ASSIGN_OR_RETURN(GemmAlgo a, ToGemmAlgo(results[static_cast<size_t>(i)].algo));
    out.push_back(a);
  }
  if (out.empty()) {
    return absl::NotFoundError(absl::StrCat("cuBLASLt has no algorithm for rows ", rows, ", n ", shape.n, ", k ",
                                            shape.k));
  }
  return out;
}

absl::StatusOr<std::vector<GemmAlgo>> LtGemm::Variants(int64_t rows, const GemmShape& shape, const GemmAlgo& base) {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Plan> plan, Describe(rows, shape));
  cublasLtMatmulAlgo_t algo;
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulAlgoInit(handle_, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF,
                                                       CUDA_R_16BF, OutType(shape), OutType(shape), base.id, &algo));
  int32_t splitk_support = 0, custom_max = 0;
  uint32_t reduction_mask = 0, swizzle_support = 0;
  size_t written = 0;
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulAlgoCapGetAttribute(
      &algo, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &splitk_support, sizeof(splitk_support), &written));
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulAlgoCapGetAttribute(
      &algo, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK, &reduction_mask, sizeof(reduction_mask), &written));
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulAlgoCapGetAttribute(
      &algo, CUBLASLT_ALGO_CAP_CTA_SWIZZLING_SUPPORT, &swizzle_support, sizeof(swizzle_support), &written));
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_CUSTOM_OPTION_MAX,
                                                                  &custom_max, sizeof(custom_max), &written));
  std::vector<std::pair<int32_t, uint32_t>> splits = {{1, CUBLASLT_REDUCTION_SCHEME_NONE}};
  if (splitk_support != 0) {
    for (int32_t k = 2; k <= 4; ++k) {
      for (uint32_t scheme : {CUBLASLT_REDUCTION_SCHEME_INPLACE, CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE,
                              CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE}) {
        if ((reduction_mask & scheme) != 0) splits.emplace_back(k, scheme);
      }
    }
  }
  std::vector<uint16_t> clusters = {base.cluster_shape};
  for (uint16_t c : {CUBLASLT_CLUSTER_SHAPE_AUTO, CUBLASLT_CLUSTER_SHAPE_1x1x1, CUBLASLT_CLUSTER_SHAPE_2x1x1,
                     CUBLASLT_CLUSTER_SHAPE_1x2x1}) {
    if (c != base.cluster_shape) clusters.push_back(c);
  }
  std::vector<GemmAlgo> out;
  for (const auto& [splitk, reduction] : splits) {
    for (uint32_t swizzle = 0; swizzle <= (swizzle_support != 0 ? 1u : 0u); ++swizzle) {
      for (int32_t custom = 0; custom <= std::min(custom_max, 15); ++custom) {
        for (uint16_t cluster : clusters) {
          GemmAlgo a = base;
          a.splitk = splitk;
          a.reduction = reduction;
          a.swizzle = swizzle;
          a.custom = static_cast<uint32_t>(custom);
          a.cluster_shape = cluster;
          if (a == base || !Build(a, *plan, shape).ok()) continue;
          out.push_back(a);
        }
      }
    }
  }
  return out;
}

absl::StatusOr<LtGemm::Plan*> LtGemm::PlanFor(int64_t rows, const GemmShape& shape) {
  const auto key = std::make_pair(rows, shape);
  if (auto it = plans_.find(key); it != plans_.end()) return it->second.get();
  if (plans_.size() >= kMaxPlans) plans_.clear();
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Plan> plan, Describe(rows, shape));
  bool chosen = false;
  if (const std::optional<GemmAlgo> tuned = table_.Find(rows, shape)) {
    absl::StatusOr<cublasLtMatmulAlgo_t> algo = Build(*tuned, *plan, shape);
    if (algo.ok()) {
      plan->algo = *algo;
      chosen = true;
    } else if (warned_.insert(shape).second) {  // once per shape: prefill row counts vary
      TANDEM_LOG(WARNING) << "tuned GEMM algorithm " << tuned->id << " does not run rows " << rows << ", n "
                          << shape.n << ", k " << shape.k << " (" << algo.status().message()
                          << "); using cuBLASLt's heuristic where it does not";
    }
  }
  if (!chosen) {
    TANDEM_ASSIGN_OR_RETURN(std::vector<GemmAlgo> candidates, Heuristic(*plan, rows, shape, 1));
    TANDEM_ASSIGN_OR_RETURN(plan->algo, Build(candidates.front(), *plan, shape));
  }
  Plan* p = plan.get();
  plans_.emplace(key, std::move(plan));
  return p;
}

absl::Status LtGemm::Matmul(const Plan& plan, const cublasLtMatmulAlgo_t& algo, const __nv_bfloat16* x,
                            const __nv_bfloat16* w, void* y, cudaStream_t stream) {
  const float alpha = 1.0f, beta = 0.0f;
  return CublasStatus(cublasLtMatmul(handle_, plan.desc, &alpha, w, plan.a, x, plan.b, &beta, y, plan.d, y, plan.d,
                                     &algo, workspace_, workspace_bytes_, stream),
                      "cublasLtMatmul");
}

absl::Status LtGemm::Run(const __nv_bfloat16* x, int64_t rows, const __nv_bfloat16* w, const GemmShape& shape,
                         void* y, cudaStream_t stream) {
  TANDEM_ASSIGN_OR_RETURN(Plan * plan, PlanFor(rows, shape));
  return Matmul(*plan, plan->algo, x, w, y, stream);
}

absl::Status LtGemm::RunWith(const GemmAlgo& algo, const __nv_bfloat16* x, int64_t rows, const __nv_bfloat16* w,
                             const GemmShape& shape, void* y, cudaStream_t stream) {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Plan> plan, Describe(rows, shape));
  TANDEM_ASSIGN_OR_RETURN(cublasLtMatmulAlgo_t built, Build(algo, *plan, shape));
  return Matmul(*plan, built, x, w, y, stream);
}

absl::StatusOr<GemmAlgoTable> LoadGemmAlgoTableForDevice(const std::string& path, int device) {
  TANDEM_ASSIGN_OR_RETURN(GemmAlgoTable table, GemmAlgoTable::Load(path));
  cudaDeviceProp prop;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device));
  const int64_t version = static_cast<int64_t>(cublasLtGetVersion());
  if (table.device != prop.name || table.cublaslt_version != version) {
    TANDEM_LOG(WARNING) << path << " was tuned on " << table.device << " with cuBLASLt " << table.cublaslt_version
                        << ", not this " << prop.name << " with cuBLASLt " << version
                        << ": using cuBLASLt's heuristic for every GEMM";
    return GemmAlgoTable();
  }
  TANDEM_LOG(INFO) << "GEMM algorithms: " << table.size() << " tuned shapes from " << path;
  return table;
}

}  // namespace tandem
