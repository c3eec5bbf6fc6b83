// tandem-gemm-tune: times the cuBLASLt algorithms its heuristic offers
// for each of a model's GEMMs (qkv, o, gate/up, down, lm_head) at the row
// counts the engine runs them at (the decode graph ladder, prefill
// chunks), and writes the fastest per shape as a GemmAlgoTable file for
// `--gemm_algos`. Each candidate runs over several distinct weight copies
// in one CUDA graph (so the weights come from memory, as in a real step),
// and must give the heuristic choice's results (relative error under
// 1e-2 on the first rows) to be chosen. With --explore N, the variants
// of the N fastest of them (split-K, swizzling, custom options, cluster
// shapes: LtGemm::Variants) are timed too, for the decode row counts
// (--explore_max_rows). Prints each shape's heuristic and
// best times, and per row count the GEMM time of one forward pass both
// ways.
//   tandem-gemm-tune --model DIR --out gemm_algos.json
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/gpu_ceilings/bench_util.h"
#include "bench/gpu_ceilings/gpu_ceilings.h"
#include "common/engine/cuda/gemm_algo_table.h"
#include "common/engine/cuda/lt_gemm.h"
#include "common/model/model_config.h"
#include "common/util/flags_usage.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory (config.json)");
ABSL_FLAG(std::string, rows, "8,16,24,32,48,64,96,128,160,192,224,256,512,1024,2048,4096,8192,16384",
          "row counts to tune (the decode graph ladder above the small-GEMM rows, then prefill chunks)");
ABSL_FLAG(int32_t, candidates, 16, "most heuristic algorithms timed per shape");
ABSL_FLAG(int32_t, copies, 8, "distinct weight copies per timed graph");
ABSL_FLAG(int32_t, repeats, 3, "timed graph replays per algorithm (median)");
ABSL_FLAG(int32_t, explore, 0,
          "also time the variants (split-K, swizzle, custom option, cluster shape) of this many of the fastest "
          "heuristic choices");
ABSL_FLAG(int64_t, explore_max_rows, 256, "with --explore: only for row counts up to this");
ABSL_FLAG(double, min_gain, 0.01, "keep the heuristic's choice unless another is this much faster");
ABSL_FLAG(std::string, out, "gemm_algos.json", "where to write the table");

namespace tandem {
namespace {

struct Product {
  std::string name;
  GemmShape shape;
  int64_t max_rows;  // lm_head runs for the logit rows only: at most one per sequence
  std::vector<__nv_bfloat16*> w;
};

// Fills `count` bf16 values with a repeating random pattern (values in
// [-1, 1)); the pattern is long enough that no two rows are alike.
void FillRandom(__nv_bfloat16* p, size_t count, const std::vector<__nv_bfloat16>& pattern) {
  for (size_t at = 0; at < count; at += pattern.size()) {
    const size_t n = std::min(pattern.size(), count - at);
    CUDA_OK(cudaMemcpy(p + at, pattern.data(), n * sizeof(__nv_bfloat16), cudaMemcpyHostToDevice));
  }
}

// Seconds per launch of `enqueue(i)` for i in [0, launches), captured in
// one graph and replayed (median of `repeats`); negative if it failed.
double TimeGraph(cudaStream_t stream, int launches, int repeats, const std::function<absl::Status(int)>& enqueue) {
  absl::StatusOr<double> t = bench::GraphReplaySeconds(
      stream,
      [&] {
        for (int i = 0; i < launches; ++i) {
          if (absl::Status s = enqueue(i); !s.ok()) return s;
        }
        return absl::OkStatus();
      },
      repeats);
  return t.ok() ? *t / launches : -1;
}

// The first `rows` x n outputs as floats.
std::vector<float> Fetch(const void* y, int64_t rows, const GemmShape& s) {
  const size_t count = static_cast<size_t>(rows * s.n);
  std::vector<float> out(count);
  if (s.out_f32) {
    CUDA_OK(cudaMemcpy(out.data(), y, count * 4, cudaMemcpyDeviceToHost));
  } else {
    std::vector<__nv_bfloat16> h(count);
    CUDA_OK(cudaMemcpy(h.data(), y, count * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < count; ++i) out[i] = __bfloat162float(h[i]);
  }
  return out;
}

double RelErr(const std::vector<float>& a, const std::vector<float>& ref) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(a[i] - ref[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(ref[i])));
  }
  return std::isfinite(diff) ? diff / std::max(scale, 1e-30) : INFINITY;
}

int Main() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir + "/config.json");
  if (!config.ok()) {
    std::fprintf(stderr, "tandem-gemm-tune: %s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  const ModelConfig& c = *config;
  const std::vector<int64_t> row_counts = bench::ParseInts(absl::GetFlag(FLAGS_rows));
  const int copies = std::max(1, absl::GetFlag(FLAGS_copies)), repeats = absl::GetFlag(FLAGS_repeats);
  const int max_candidates = absl::GetFlag(FLAGS_candidates);
  BENCH_CHECK(!row_counts.empty() && max_candidates >= 1);
  const int64_t max_rows = *std::max_element(row_counts.begin(), row_counts.end());

  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  constexpr size_t kWorkspace = 64 << 20;  // the engine's
  void* workspace = nullptr;
  CUDA_OK(cudaMalloc(&workspace, kWorkspace));
  LtGemm gemm;
  BENCH_CHECK(gemm.Init(workspace, kWorkspace, GemmAlgoTable()).ok());

  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  const int64_t logit_rows = 256;  // the engine's largest decode batch
  std::vector<Product> products = {
      {"qkv", {c.q_size() + 2 * c.kv_size(), h, true}, max_rows, {}},
      {"o", {h, c.q_size(), false}, max_rows, {}},
      {"gate_up", {2 * inter, h, false}, max_rows, {}},
      {"down", {h, inter, false}, max_rows, {}},
      {"lm_head", {c.vocab_size, h, true}, logit_rows, {}},
  };
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<__nv_bfloat16> pattern((8 << 20) + 7);  // 16 MiB, not a multiple of any row
  for (auto& v : pattern) v = __float2bfloat16(uni(rng));
  std::printf("device %s, cuBLASLt %zu; allocating %d weight copies per product...\n", prop.name,
              cublasLtGetVersion(), copies);
  std::fflush(stdout);
  int64_t max_k = 0, max_out = 0;
  for (Product& p : products) {
    const size_t count = static_cast<size_t>(p.shape.n * p.shape.k);
    for (int i = 0; i < copies; ++i) {
      __nv_bfloat16* w = nullptr;
      CUDA_OK(cudaMalloc(&w, count * sizeof(__nv_bfloat16)));
      FillRandom(w, count, pattern);
      p.w.push_back(w);
    }
    max_k = std::max(max_k, p.shape.k);
    max_out = std::max(max_out, std::min(p.max_rows, max_rows) * p.shape.n * 4);
  }
  __nv_bfloat16* x = nullptr;
  void* y = nullptr;
  CUDA_OK(cudaMalloc(&x, static_cast<size_t>(max_rows * max_k) * sizeof(__nv_bfloat16)));
  CUDA_OK(cudaMalloc(&y, static_cast<size_t>(max_out)));
  FillRandom(x, static_cast<size_t>(max_rows * max_k), pattern);

  GemmAlgoTable table;
  table.device = prop.name;
  table.cublaslt_version = static_cast<int64_t>(cublasLtGetVersion());
  const double layers = static_cast<double>(c.num_hidden_layers);
  for (int64_t rows : row_counts) {
    double pass_heuristic = 0, pass_best = 0;  // one forward pass's GEMMs, seconds
    for (const Product& p : products) {
      if (rows > p.max_rows) continue;
      absl::StatusOr<std::vector<GemmAlgo>> cands = gemm.Candidates(rows, p.shape, max_candidates);
      if (!cands.ok()) {
        std::printf("rows %5ld %-8s: %s\n", rows, p.name.c_str(), std::string(cands.status().message()).c_str());
        continue;
      }
      const int64_t check_rows = std::min<int64_t>(rows, 64);
      auto run = [&](const GemmAlgo& a, int i) { return gemm.RunWith(a, x, rows, p.w[i], p.shape, y, stream); };
      BENCH_CHECK(run(cands->front(), 0).ok());
      const std::vector<float> ref = Fetch(y, check_rows, p.shape);
      const double heuristic = TimeGraph(stream, copies, repeats, [&](int i) { return run(cands->front(), i); });
      BENCH_CHECK(heuristic > 0);
      GemmAlgo best = cands->front();
      double best_s = heuristic;
      int rejected = 0;
      std::vector<std::pair<double, GemmAlgo>> timed = {{heuristic, cands->front()}};
      // Keeps `a` when it beats the best so far by min_gain and computes
      // the heuristic choice's products.
      auto consider = [&](const GemmAlgo& a) {
        const double s = TimeGraph(stream, copies, repeats, [&](int j) { return run(a, j); });
        if (s <= 0) return;
        timed.emplace_back(s, a);
        if (s >= best_s * (1.0 - absl::GetFlag(FLAGS_min_gain))) return;
        BENCH_CHECK(run(a, 0).ok());
        if (RelErr(Fetch(y, check_rows, p.shape), ref) > 1e-2) {
          ++rejected;
          return;
        }
        best = a;
        best_s = s;
      };
      for (size_t i = 1; i < cands->size(); ++i) consider((*cands)[i]);
      size_t tried = cands->size();
      if (absl::GetFlag(FLAGS_explore) > 0 && rows <= absl::GetFlag(FLAGS_explore_max_rows)) {
        std::sort(timed.begin(), timed.end(), [](const auto& l, const auto& r) { return l.first < r.first; });
        const size_t bases = std::min<size_t>(timed.size(), static_cast<size_t>(absl::GetFlag(FLAGS_explore)));
        std::vector<GemmAlgo> seeds;
        for (size_t i = 0; i < bases; ++i) seeds.push_back(timed[i].second);
        for (const GemmAlgo& seed : seeds) {
          absl::StatusOr<std::vector<GemmAlgo>> variants = gemm.Variants(rows, p.shape, seed);
          if (!variants.ok()) continue;
          for (const GemmAlgo& v : *variants) {
            if (std::any_of(timed.begin(), timed.end(), [&](const auto& c) { return c.second == v; })) continue;
            consider(v);
            ++tried;
          }
        }
      }
      table.Set(rows, p.shape, best, best_s * 1e6, heuristic * 1e6);
      const double flops = 2.0 * static_cast<double>(rows * p.shape.n * p.shape.k);
      const double per_pass = p.name == "lm_head" ? 1 : layers;
      pass_heuristic += heuristic * per_pass;
      pass_best += best_s * per_pass;
      std::printf(
          "rows %5ld %-8s [%6ld x %5ld]: heuristic %9.1f us %5.0f TFLOP/s | best of %3zu %9.1f us %5.0f TFLOP/s "
          "(%.2fx) algo %d tile %u stages %u splitk %d%s\n",
          rows, p.name.c_str(), p.shape.n, p.shape.k, heuristic * 1e6, flops / heuristic / 1e12, tried,
          best_s * 1e6, flops / best_s / 1e12, heuristic / best_s, best.id, best.tile, best.stages, best.splitk,
          rejected > 0 ? " (faster ones gave other results)" : "");
      std::fflush(stdout);
    }
    std::printf("rows %5ld: one forward pass's GEMMs %.3f ms with the heuristic, %.3f ms tuned (%.2fx)\n", rows,
                pass_heuristic * 1e3, pass_best * 1e3, pass_heuristic / pass_best);
    std::fflush(stdout);
  }
  std::ofstream(absl::GetFlag(FLAGS_out)) << table.ToJson() << "\n";
  std::printf("wrote %zu tuned shapes to %s\n", table.size(), absl::GetFlag(FLAGS_out).c_str());
  return 0;
}

}  // namespace
}  // namespace tandem

int main(int argc, char** argv) {
  tandem::SetUpFlagsUsage("tandem-gemm-tune: tunes the GEMM algorithm table for this GPU [flags]", {"bench/gemm_tune/", "bench/gpu_ceilings/"});
  absl::ParseCommandLine(argc, argv);
  return tandem::Main();
}
