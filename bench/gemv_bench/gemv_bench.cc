// tandem-gemv-bench: the decode step's matrix products at batch 1 (the
// engine's small GEMMs), every compiled kernel shape against the device
// copy bandwidth measured in the same run, with cuBLAS's bf16 GEMV beside
// them. Each product of the model (qkv, o, gate/up + SiLU, down, lm_head)
// runs over as many distinct weight copies as the model has layers, in one
// CUDA graph, so nothing is served from L2 that a real step would read
// from memory. Prints a table per product and the best shape; then one
// step's products in sequence with the engine's default shapes.
//   tandem-gemv-bench --model DIR --out gemv.json
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/gpu_ceilings/bench_util.h"
#include "bench/gpu_ceilings/gpu_ceilings.h"
#include "common/engine/cuda/small_gemm.h"
#include "common/model/model_config.h"
#include "common/util/flags_usage.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory (config.json)");
ABSL_FLAG(std::string, blocks_per_sm, "0,2,4,8", "grid caps to try (0: no cap)");
ABSL_FLAG(int32_t, repeats, 5, "timed graph replays per measurement");
ABSL_FLAG(std::string, out, "gemv_bench.json", "JSON results");

namespace tandem {
namespace {

// Seconds per replay of the graph of `enqueue`'s launches, median of the
// repeats.
double TimeGraph(cudaStream_t stream, const std::function<void()>& enqueue, int repeats) {
  absl::StatusOr<double> t = bench::GraphReplaySeconds(
      stream,
      [&] {
        enqueue();
        return absl::OkStatus();
      },
      repeats);
  BENCH_CHECK(t.ok());
  return *t;
}

// One matrix product of the model: n output columns of k inputs (gated:
// n gate and n up columns), `copies` distinct weights.
struct Product {
  std::string name;
  int64_t k, n;
  bool gated;
  int copies;
  std::vector<void*> w;
  double bytes() const { return 2.0 * static_cast<double>(k) * static_cast<double>(n) * (gated ? 2 : 1); }
};

// Every bf16 0x3c3c (about 0.0115): the values do not change the timing.
void Fill(void* p, size_t bytes, cudaStream_t stream) {
  CUDA_OK(cudaMemsetAsync(p, 0x3c, bytes, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
}

int Main() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir + "/config.json");
  if (!config.ok()) {
    std::fprintf(stderr, "tandem-gemv-bench: %s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  const ModelConfig& c = *config;
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cublasHandle_t cublas;
  BENCH_CHECK(cublasCreate(&cublas) == CUBLAS_STATUS_SUCCESS);
  BENCH_CHECK(cublasSetStream(cublas, stream) == CUBLAS_STATUS_SUCCESS);
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));

  const int layers = static_cast<int>(c.num_hidden_layers);
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  std::vector<Product> products = {
      {"qkv", h, c.q_size() + 2 * c.kv_size(), false, layers, {}},
      {"o", c.q_size(), h, false, layers, {}},
      {"gate_up+silu", h, inter, true, layers, {}},
      {"down", inter, h, false, layers, {}},
      {"lm_head", h, c.vocab_size, false, 1, {}},
  };
  std::printf("allocating weights...\n");
  std::fflush(stdout);
  for (Product& p : products) {
    for (int l = 0; l < p.copies; ++l) {
      void* w = nullptr;
      CUDA_OK(cudaMalloc(&w, static_cast<size_t>(p.bytes())));
      Fill(w, static_cast<size_t>(p.bytes()), stream);
      p.w.push_back(w);
    }
  }
  int64_t max_k = 0, max_n = 0;
  for (const Product& p : products) max_k = std::max(max_k, p.k), max_n = std::max(max_n, p.n);
  void *x = nullptr, *y = nullptr;
  CUDA_OK(cudaMalloc(&x, static_cast<size_t>(max_k) * 2));
  CUDA_OK(cudaMalloc(&y, static_cast<size_t>(max_n) * 4));
  Fill(x, static_cast<size_t>(max_k) * 2, stream);

  const absl::StatusOr<double> measured = bench::CopyBandwidth();
  if (!measured.ok()) {
    std::fprintf(stderr, "tandem-gemv-bench: %s\n", measured.status().ToString().c_str());
    return 1;
  }
  const double copy_bw = *measured;
  std::printf("device %s: copy bandwidth %.0f GB/s (read+write), L2 %d MB\n", prop.name, copy_bw / 1e9,
              prop.l2CacheSize >> 20);
  nlohmann::json out;
  out["device"] = prop.name;
  out["copy_bandwidth_GBps"] = copy_bw / 1e9;

  const int repeats = absl::GetFlag(FLAGS_repeats);
  auto run = [&](const Product& p, const cuda::SmallGemmShape& s, int l) {
    const auto* xb = static_cast<const __nv_bfloat16*>(x);
    const auto* wb = static_cast<const __nv_bfloat16*>(p.w[static_cast<size_t>(l)]);
    return p.gated ? cuda::SmallGemmSiluMulWith(s, xb, 1, p.k, wb, p.n, static_cast<__nv_bfloat16*>(y), stream)
                   : cuda::SmallGemmWith(s, xb, 1, p.k, wb, p.n, y, false, stream);
  };
  for (const Product& p : products) {
    std::printf("\n%s: [%ld][%ld]%s bf16, %.1f MB per copy, %d copies\n", p.name.c_str(), static_cast<long>(p.n),
                static_cast<long>(p.k), p.gated ? " x 2" : "", p.bytes() / 1e6, p.copies);
    nlohmann::json rows = nlohmann::json::array();
    auto report = [&](const std::string& name, double t) {
      const double bw = p.bytes() / t;
      std::printf("  %-34s %8.1f us  %6.0f GB/s  %5.1f%% of copy bandwidth\n", name.c_str(), t * 1e6, bw / 1e9,
                  100 * bw / copy_bw);
      rows.push_back({{"shape", name}, {"us", t * 1e6}, {"GBps", bw / 1e9}, {"fraction_of_copy_bw", bw / copy_bw}});
    };
    // cuBLAS: the same product as a [n][k] x [k][1] GEMM (gated: both
    // halves, without the SiLU).
    const int64_t cols = p.n * (p.gated ? 2 : 1);
    const float alpha = 1, beta = 0;
    report("cublas", TimeGraph(stream, [&] {
             for (int l = 0; l < p.copies; ++l) {
               BENCH_CHECK(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(cols), 1,
                                        static_cast<int>(p.k), &alpha, p.w[static_cast<size_t>(l)], CUDA_R_16BF,
                                        static_cast<int>(p.k), x, CUDA_R_16BF, static_cast<int>(p.k), &beta, y,
                                        CUDA_R_32F, static_cast<int>(cols), CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
             }
           }, repeats) / p.copies);
    double best = 1e30;
    std::string best_name;
    for (cuda::SmallGemmShape s : cuda::SmallGemmShapes()) {
      for (int64_t bps : bench::ParseInts(absl::GetFlag(FLAGS_blocks_per_sm))) {
        s.blocks_per_sm = bps;
        const double t = TimeGraph(stream, [&] {
                           for (int l = 0; l < p.copies; ++l) BENCH_CHECK(run(p, s, l));
                         }, repeats) / p.copies;
        report(s.Name(), t);
        if (t < best) best = t, best_name = s.Name();
      }
    }
    const cuda::SmallGemmShape d = cuda::DefaultSmallGemmShape(1, p.k, p.n, p.gated);
    const double td = TimeGraph(stream, [&] {
                        for (int l = 0; l < p.copies; ++l) BENCH_CHECK(run(p, d, l));
                      }, repeats) / p.copies;
    report("default " + d.Name(), td);
    std::printf("  best: %s, %.1f%% of copy bandwidth\n", best_name.c_str(), 100 * p.bytes() / best / copy_bw);
    out["products"][p.name] = {{"bytes", p.bytes()}, {"runs", rows}, {"best", best_name},
                               {"best_fraction_of_copy_bw", p.bytes() / best / copy_bw}};
    std::fflush(stdout);
  }

  // One decode step's products in order (no attention, norms or sampling):
  // how close the engine's default shapes come to the weight bytes alone.
  double step_bytes = 0;
  for (const Product& p : products) step_bytes += p.bytes() * (p.copies == layers ? layers : 1);
  const double ts = TimeGraph(stream, [&] {
    for (int l = 0; l < layers; ++l) {
      for (size_t i = 0; i + 1 < products.size(); ++i) {
        BENCH_CHECK(run(products[i], cuda::DefaultSmallGemmShape(1, products[i].k, products[i].n, products[i].gated), l));
      }
    }
    const Product& head = products.back();
    BENCH_CHECK(run(head, cuda::DefaultSmallGemmShape(1, head.k, head.n, false), 0));
  }, repeats);
  std::printf("\none step's products, default shapes: %.3f ms for %.2f GB = %.1f%% of copy bandwidth\n", ts * 1e3,
              step_bytes / 1e9, 100 * step_bytes / ts / copy_bw);
  out["step_products"] = {{"ms", ts * 1e3}, {"bytes", step_bytes}, {"fraction_of_copy_bw", step_bytes / ts / copy_bw}};
  std::ofstream(absl::GetFlag(FLAGS_out)) << out.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace tandem

int main(int argc, char** argv) {
  tandem::SetUpFlagsUsage("tandem-gemv-bench: GEMV kernel benchmark against the GPU's memory bandwidth [flags]", {"bench/gemv_bench/", "bench/gpu_ceilings/"});
  absl::ParseCommandLine(argc, argv);
  return tandem::Main();
}
