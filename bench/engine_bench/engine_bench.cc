// tandem-engine-bench: the CUDA engine against the GPU's own ceilings,
// measured in the same run. Prints each figure beside its ceiling:
//   - device copy bandwidth (a large device-to-device copy, bytes read plus
//     bytes written) and the cuBLAS bf16 GEMM rate (8192^3, random data);
//   - decode steps at batch 1, 64 and 256 over 1k-token contexts (weights
//     and KV bytes per step over the step time);
//   - prefill of one 512, 2k and 8k-token prompt (model FLOPs over time);
//   - a workload of N requests x P prompt / G output tokens (greedy, no
//     EOS) through the engine's continuous batcher, against its roofline:
//     prefill FLOPs over the GEMM rate plus decode bytes over the copy
//     bandwidth.
// Writes everything to --out as JSON.
//   tandem-engine-bench --model DIR --dummy_weights --out engine.json
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "common/engine/scheduler_flags.h"
#include "absl/flags/parse.h"
#include "bench/gpu_ceilings/bench_util.h"
#include "bench/tandem_bench/workload.h"
#include "bench/gpu_ceilings/gpu_ceilings.h"
#include "common/engine/engine.h"
#include "common/engine/local_generator.h"
#include "common/engine/model_loader.h"
#include "common/util/flags_usage.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory (config.json, tokenizer.json)");
ABSL_FLAG(bool, dummy_weights, true, "random weights of the config's shapes");
ABSL_FLAG(double, gpu_memory_fraction, 0.9, "share of device memory for weights, scratch and KV");
ABSL_FLAG(bool, cuda_graphs, true, "replay CUDA graphs for decode steps");
ABSL_FLAG(int32_t, decode_min_partition, 0, "narrowest flash-decoding context split (0: the engine's default)");
ABSL_FLAG(std::string, gemm_algos, "", "GEMM algorithm table from tandem-gemm-tune (empty: cuBLASLt's heuristic)");
ABSL_FLAG(std::string, decode_batches, "1,64,256", "decode batch sizes");
ABSL_FLAG(int32_t, decode_context, 1024, "context length of the decode steps");
ABSL_FLAG(std::string, prefill_lengths, "512,2048,8192", "prompt lengths of the prefill runs");
ABSL_FLAG(int32_t, workload_requests, 256, "workload: requests (0 skips it)");
ABSL_FLAG(int32_t, workload_prompt, 512, "workload: prompt tokens");
ABSL_FLAG(int32_t, workload_output, 128, "workload: output tokens");
ABSL_FLAG(std::string, workload_lengths, "",
          "workload lengths as tandem-bench draws them: 'sharegpt' runs the very requests of `tandem-bench "
          "--input_len sharegpt --output_len sharegpt --seed S --num_requests N` (N = --workload_requests), so the "
          "engine's own throughput can be set beside the served system's; empty: every request "
          "--workload_prompt/--workload_output");
ABSL_FLAG(uint64_t, workload_seed, 1, "workload: tandem-bench's --seed (with --workload_lengths)");
ABSL_FLAG(std::string, out, "engine_bench.json", "JSON results");

namespace tandem {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

struct ModelCosts {
  double weight_bytes = 0;      // every matrix read once per step (bf16)
  double matmul_params = 0;     // per token, excluding the lm_head
  double kv_bytes_per_token = 0;
  double lm_head_params = 0;
};

ModelCosts Costs(const ModelConfig& c) {
  ModelCosts m;
  const double h = static_cast<double>(c.hidden_size), inter = static_cast<double>(c.intermediate_size);
  const double qs = static_cast<double>(c.q_size()), kvs = static_cast<double>(c.kv_size());
  const double per_layer = h * (qs + 2 * kvs) + qs * h + 3 * h * inter;
  m.matmul_params = per_layer * static_cast<double>(c.num_hidden_layers);
  m.lm_head_params = static_cast<double>(c.vocab_size) * h;
  m.weight_bytes = 2 * (m.matmul_params + m.lm_head_params);
  m.kv_bytes_per_token = 2.0 * 2 * kvs * static_cast<double>(c.num_hidden_layers);
  return m;
}

// Causal attention FLOPs of a T-token prompt (QK^T and PV).
double AttentionFlops(const ModelConfig& c, double t) {
  return 2.0 * 2 * (t * (t + 1) / 2) * static_cast<double>(c.q_size()) * static_cast<double>(c.num_hidden_layers);
}

std::vector<int32_t> RandomTokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = static_cast<int32_t>(rng() % static_cast<uint64_t>(std::min<int64_t>(vocab, 100000)));
  return t;
}

// tandem-bench's workload options for `lengths` ("sharegpt", "N" or
// "LO:HI" for both prompt and output), as bench_main.cc sets them from
// the router's ModelInfo.
absl::StatusOr<bench::WorkloadOptions> BenchWorkloadOptions(const std::string& lengths, int32_t n,
                                                            const ModelConfig& cfg) {
  bench::WorkloadOptions w;
  w.num_requests = n;
  absl::StatusOr<bench::LengthSpec> in = bench::LengthSpec::Parse(lengths, "workload_lengths");
  if (!in.ok()) return in.status();
  w.input = w.output = *in;
  w.vocab_size = cfg.vocab_size;
  w.max_input = static_cast<int32_t>(std::max<int64_t>(16, cfg.max_position_embeddings / 2));
  w.max_output = static_cast<int32_t>(std::max<int64_t>(16, cfg.max_position_embeddings / 4));
  w.seed = absl::GetFlag(FLAGS_workload_seed);
  return w;
}

// The workload's backend, timed: wall time inside Forward (host planning,
// uploads, the GPU's work and the wait for its samples) for steps with
// prompt tokens ("mixed") and pure decode steps. What the workload's wall
// time has beyond both is the engine's own host work between steps.
class TimedBackend final : public ModelBackend {
 public:
  explicit TimedBackend(std::unique_ptr<ModelBackend> inner) : inner_(std::move(inner)) {}
  const ModelConfig& config() const override { return inner_->config(); }
  KvPoolView& kv_pool() override { return inner_->kv_pool(); }
  bool samples_on_device() const override { return inner_->samples_on_device(); }
  std::string numerics() const override { return inner_->numerics(); }
  absl::Status Forward(const ForwardBatch& batch, ForwardOutput* out) override {
    const bool mixed = std::any_of(batch.seqs.begin(), batch.seqs.end(),
                                   [](const SequenceChunk& c) { return c.tokens.size() > 1; });
    const auto t0 = Clock::now();
    absl::Status s = inner_->Forward(batch, out);
    (mixed ? mixed_s : decode_s) += Seconds(t0, Clock::now());
    ++(mixed ? mixed_steps : decode_steps);
    return s;
  }
  void Reset() { mixed_s = decode_s = 0, mixed_steps = decode_steps = 0; }

  double mixed_s = 0, decode_s = 0;
  int64_t mixed_steps = 0, decode_steps = 0;

 private:
  std::unique_ptr<ModelBackend> inner_;
};

int Main() {
  nlohmann::json out;
  std::printf("measuring ceilings...\n");
  std::fflush(stdout);
  const absl::StatusOr<double> copy_bw_or = bench::CopyBandwidth();
  const absl::StatusOr<double> gemm_or = bench::GemmRate();
  if (!copy_bw_or.ok() || !gemm_or.ok()) {
    std::fprintf(stderr, "tandem-engine-bench: measuring the ceilings: %s\n",
                 (copy_bw_or.ok() ? gemm_or.status() : copy_bw_or.status()).ToString().c_str());
    return 1;
  }
  const double copy_bw = *copy_bw_or, gemm = *gemm_or;
  cudaDeviceProp prop{};
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  out["device"] = prop.name;
  out["copy_bandwidth_GBps"] = copy_bw / 1e9;
  out["gemm_TFLOPs"] = gemm / 1e12;
  std::printf("device %s: copy bandwidth %.0f GB/s (read+write), cuBLAS bf16 GEMM %.0f TFLOP/s\n", prop.name,
              copy_bw / 1e9, gemm / 1e12);

  ModelSource src{absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_dummy_weights), 0};
  auto model = LoadModel(src);
  BENCH_CHECK(model.ok());
  BackendOptions bo;
  bo.device = BackendOptions::Device::kCuda;
  bo.num_kv_blocks = 0;
  bo.gpu_memory_fraction = absl::GetFlag(FLAGS_gpu_memory_fraction);
  bo.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  bo.cuda_decode_min_partition = absl::GetFlag(FLAGS_decode_min_partition);
  bo.cuda_gemm_algos = absl::GetFlag(FLAGS_gemm_algos);
  auto backend = CreateBackend(*model, bo);
  if (!backend.ok()) {
    std::fprintf(stderr, "%s\n", backend.status().ToString().c_str());
    return 1;
  }
  // The dummy weights' host copy is not needed once on the device.
  model->weights.reset();
  const ModelConfig& cfg = model->config;
  const ModelCosts costs = Costs(cfg);
  ModelBackend& be = **backend;
  const int32_t bs = be.kv_pool().layout().block_size;
  const int32_t pool_blocks = be.kv_pool().num_blocks();
  SamplingParams greedy;
  greedy.temperature = 0;

  // Runs `seqs` (tokens + cached counts) with greedy sampling on blocks
  // laid out consecutively from block 0; returns seconds.
  auto run = [&](const std::vector<std::vector<int32_t>>& tokens, const std::vector<int32_t>& cached,
                 int32_t blocks_per_seq) {
    ForwardBatch batch;
    std::vector<std::vector<int32_t>> tables(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) {
      for (int32_t b = 0; b < blocks_per_seq; ++b) tables[i].push_back(static_cast<int32_t>(i) * blocks_per_seq + b);
      batch.seqs.push_back({tokens[i], cached[i], tables[i], false});
      batch.sample.push_back({&greedy, {}, 1, 0});
    }
    ForwardOutput o;
    const auto t0 = Clock::now();
    const absl::Status st = be.Forward(batch, &o);
    const auto t1 = Clock::now();
    if (!st.ok()) {
      std::fprintf(stderr, "forward: %s\n", st.ToString().c_str());
      std::exit(1);
    }
    return Seconds(t0, t1);
  };

  // --- Decode ---
  const int32_t ctx = absl::GetFlag(FLAGS_decode_context);
  const int32_t blocks_per_seq = (ctx + bs - 1) / bs;
  for (const int64_t batch : bench::ParseInts(absl::GetFlag(FLAGS_decode_batches))) {
    const auto b = static_cast<int32_t>(batch);
    if (static_cast<int64_t>(b) * blocks_per_seq > pool_blocks) {
      std::printf("decode batch %d x %d tokens: skipped, the KV pool has %d blocks\n", b, ctx, pool_blocks);
      continue;
    }
    // Fill the contexts with a real prefill (8k tokens per forward).
    const int32_t per_fill = std::max(1, 8192 / ctx);
    for (int32_t s0 = 0; s0 < b; s0 += per_fill) {
      std::vector<std::vector<int32_t>> toks;
      for (int32_t s = s0; s < std::min(b, s0 + per_fill); ++s) toks.push_back(RandomTokens(ctx - 1, cfg.vocab_size, s));
      ForwardBatch fill;
      std::vector<std::vector<int32_t>> tables(toks.size());
      for (size_t i = 0; i < toks.size(); ++i) {
        for (int32_t k = 0; k < blocks_per_seq; ++k) tables[i].push_back((s0 + static_cast<int32_t>(i)) * blocks_per_seq + k);
        fill.seqs.push_back({toks[i], 0, tables[i], false});
        fill.sample.push_back({&greedy, {}, 1, 0});
      }
      ForwardOutput o;
      BENCH_CHECK(be.Forward(fill, &o).ok());
    }
    // Each step rewrites the last slot: every step reads ctx positions.
    std::vector<std::vector<int32_t>> toks(static_cast<size_t>(b), std::vector<int32_t>{7});
    std::vector<int32_t> cached(static_cast<size_t>(b), ctx - 1);
    std::vector<double> t;
    for (int i = 0; i < 23; ++i) {
      const double s = run(toks, cached, blocks_per_seq);
      if (i >= 3) t.push_back(s);
    }
    const double step = bench::Median(t);
    const double kv = costs.kv_bytes_per_token * b * ctx;
    const double bw = (costs.weight_bytes + kv) / step;
    std::printf(
        "decode batch %3d, context %d: step %.3f ms, %.0f tok/s; weights %.2f GB + KV %.2f GB per step -> %.0f GB/s "
        "= %.1f%% of copy bandwidth (weights alone: %.1f%%)\n",
        b, ctx, step * 1e3, b / step, costs.weight_bytes / 1e9, kv / 1e9, bw / 1e9, 100 * bw / copy_bw,
        100 * costs.weight_bytes / step / copy_bw);
    out["decode"].push_back({{"batch", b}, {"context", ctx}, {"step_ms", step * 1e3}, {"tokens_per_s", b / step},
                             {"weight_bytes", costs.weight_bytes}, {"kv_bytes", kv}, {"GBps", bw / 1e9},
                             {"fraction_of_copy_bw", bw / copy_bw},
                             {"weights_fraction_of_copy_bw", costs.weight_bytes / step / copy_bw}});
    std::fflush(stdout);
  }

  // --- Prefill ---
  for (const int64_t length : bench::ParseInts(absl::GetFlag(FLAGS_prefill_lengths))) {
    const auto len = static_cast<int32_t>(length);
    const int32_t blocks = (len + bs - 1) / bs;
    if (blocks > pool_blocks) continue;
    std::vector<std::vector<int32_t>> toks{RandomTokens(len, cfg.vocab_size, 99)};
    std::vector<double> t;
    for (int i = 0; i < 7; ++i) {
      const double s = run(toks, {0}, blocks);
      if (i >= 2) t.push_back(s);
    }
    const double sec = bench::Median(t);
    const double flops = 2.0 * costs.matmul_params * len + 2.0 * costs.lm_head_params + AttentionFlops(cfg, len);
    std::printf("prefill %5d tokens: %.2f ms, %.0f tok/s, %.0f TFLOP/s = %.1f%% of the GEMM rate\n", len, sec * 1e3,
                len / sec, flops / sec / 1e12, 100 * flops / sec / gemm);
    out["prefill"].push_back({{"tokens", len}, {"ms", sec * 1e3}, {"tokens_per_s", len / sec},
                              {"TFLOPs", flops / sec / 1e12}, {"fraction_of_gemm", flops / sec / gemm}});
    std::fflush(stdout);
  }

  // --- Workload through the continuous batcher ---
  const int32_t n = absl::GetFlag(FLAGS_workload_requests), p = absl::GetFlag(FLAGS_workload_prompt),
                g = absl::GetFlag(FLAGS_workload_output);
  const std::string lengths = absl::GetFlag(FLAGS_workload_lengths);
  if (n > 0) {
    auto timed_owner = std::make_unique<TimedBackend>(std::move(*backend));
    TimedBackend* timed = timed_owner.get();
    Engine engine(std::move(timed_owner));
    const LocalGeneratorOptions lo = SchedulerOptionsFromFlags(/*on_gpu=*/true);
    LocalGenerator gen(engine, *model->tokenizer, lo);
    std::vector<GenerationRequest> reqs(static_cast<size_t>(n));
    int64_t prompt_tokens = 0, output_tokens = 0;
    if (lengths.empty()) {
      for (int32_t i = 0; i < n; ++i) {
        reqs[static_cast<size_t>(i)].prompt = RandomTokens(p, cfg.vocab_size, 1000 + static_cast<uint64_t>(i));
        reqs[static_cast<size_t>(i)].stopping.max_new_tokens = g;
      }
    } else {
      // The requests tandem-bench sends with the same flags (its clamps
      // come from the router's ModelInfo: half and a quarter of the
      // model's context).
      absl::StatusOr<bench::WorkloadOptions> wo = BenchWorkloadOptions(lengths, n, cfg);
      BENCH_CHECK(wo.ok());
      absl::StatusOr<std::vector<bench::BenchRequest>> drawn = bench::MakeWorkload(*wo);
      BENCH_CHECK(drawn.ok());
      for (int32_t i = 0; i < n; ++i) {
        reqs[static_cast<size_t>(i)].prompt = (*drawn)[static_cast<size_t>(i)].prompt;
        reqs[static_cast<size_t>(i)].stopping.max_new_tokens = (*drawn)[static_cast<size_t>(i)].output_tokens;
      }
    }
    for (GenerationRequest& r : reqs) {
      r.sampling = greedy;
      r.stopping.ignore_eos = true;
      prompt_tokens += static_cast<int64_t>(r.prompt.size());
      output_tokens += r.stopping.max_new_tokens;
    }
    // Warm-up (graph capture, cuBLAS heuristics) on a copy of the shapes.
    {
      std::vector<GenerationRequest> warm(reqs.begin(), reqs.begin() + std::min<int32_t>(n, 16));
      for (auto& r : warm) r.stopping.max_new_tokens = 4;
      BENCH_CHECK(gen.Run(warm, [](const GenerationEvent&) {}).ok());
    }
    int64_t tokens = 0;
    timed->Reset();
    const auto t0 = Clock::now();
    BENCH_CHECK(gen.Run(reqs, [&](const GenerationEvent& e) { tokens += e.token >= 0 ? 1 : 0; }).ok());
    const double wall = Seconds(t0, Clock::now());
    const double host_s = wall - timed->mixed_s - timed->decode_s;
    std::printf("workload steps: %lld with prompt tokens %.2f s, %lld pure decode %.2f s (%.2f ms each), "
                "between steps %.2f s\n",
                static_cast<long long>(timed->mixed_steps), timed->mixed_s,
                static_cast<long long>(timed->decode_steps), timed->decode_s,
                timed->decode_s / std::max<int64_t>(1, timed->decode_steps) * 1e3, host_s);
    if (!lengths.empty()) {
      // Lengths vary, so no closed-form roofline; the compute floor is every
      // prompt and output token through the matrices once at the GEMM rate.
      const double floor_s =
          static_cast<double>(prompt_tokens + output_tokens) * 2.0 * costs.matmul_params / gemm;
      std::printf("workload %s x %d (%lld prompt, %lld output tokens): %.2f s, %.0f output tok/s; compute floor "
                  "%.2f s (%.0f tok/s)\n",
                  lengths.c_str(), n, static_cast<long long>(prompt_tokens), static_cast<long long>(output_tokens),
                  wall, tokens / wall, floor_s, output_tokens / floor_s);
      out["workload"] = {{"requests", n}, {"lengths", lengths}, {"seed", absl::GetFlag(FLAGS_workload_seed)},
                         {"prompt_tokens", prompt_tokens}, {"output_tokens", tokens}, {"wall_s", wall},
                         {"output_tokens_per_s", tokens / wall}, {"compute_floor_s", floor_s},
                         {"max_batch_seen", gen.max_batch_seen()}, {"preemptions", gen.num_preemptions()},
                         {"mixed_steps", timed->mixed_steps}, {"mixed_s", timed->mixed_s},
                         {"decode_steps", timed->decode_steps}, {"decode_s", timed->decode_s},
                         {"between_steps_s", host_s}};
      std::ofstream(absl::GetFlag(FLAGS_out)) << out.dump(2) << "\n";
      return 0;
    }
    // Roofline: every prompt token through the matrices once, then each
    // decode step reads the weights once and every sequence's KV.
    const double prefill_flops = n * (2.0 * costs.matmul_params * p + 2.0 * costs.lm_head_params + AttentionFlops(cfg, p));
    double decode_bytes = 0;
    for (int32_t s = 1; s < g; ++s) decode_bytes += costs.weight_bytes + costs.kv_bytes_per_token * n * (p + s);
    const double roofline = prefill_flops / gemm + decode_bytes / copy_bw;
    std::printf(
        "workload %d x %d/%d: %.2f s, %.0f output tok/s (%lld tokens); roofline %.2f s (prefill %.2f s + decode "
        "%.2f s) -> %.2fx the roofline\n",
        n, p, g, wall, tokens / wall, static_cast<long long>(tokens), roofline, prefill_flops / gemm,
        decode_bytes / copy_bw, wall / roofline);
    out["workload"] = {{"requests", n}, {"prompt", p}, {"output", g}, {"wall_s", wall},
                       {"output_tokens_per_s", tokens / wall}, {"output_tokens", tokens}, {"roofline_s", roofline},
                       {"vs_roofline", wall / roofline}, {"max_batch_seen", gen.max_batch_seen()},
                       {"preemptions", gen.num_preemptions()}, {"mixed_steps", timed->mixed_steps},
                       {"mixed_s", timed->mixed_s}, {"decode_steps", timed->decode_steps},
                       {"decode_s", timed->decode_s}, {"between_steps_s", host_s}};
  }
  std::ofstream(absl::GetFlag(FLAGS_out)) << out.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace tandem

int main(int argc, char** argv) {
  tandem::SetUpFlagsUsage("tandem-engine-bench: engine throughput and latency benchmark [flags]", {"bench/engine_bench/", "bench/gpu_ceilings/"});
  absl::ParseCommandLine(argc, argv);
  return tandem::Main();
}
