// tandem-logits: teacher-forced logits of a checkpoint through one of
// tandem's backends, for parity checks against Hugging Face transformers
// on the device (tests/cuda/hf_parity.py drives it).
//   tandem-logits --model DIR --device cuda --tokens t.json --out l.bin [--incremental]
// t.json holds a list of token-id lists, run as ONE batch of mixed
// lengths. l.bin gets float32 logits [total positions][vocab], sequences
// in order. --incremental prefills each sequence's first half and then
// feeds one token per step (the decode path), all sequences batched.
#include <algorithm>
#include <fstream>
#include <iostream>
#include <numeric>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/engine/cpu_backend.h"
#include "common/engine/cuda/cuda_backend.h"
#include "common/model/model_config.h"
#include "common/model/weight_store.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory");
ABSL_FLAG(std::string, device, "cuda", "cpu or cuda");
ABSL_FLAG(std::string, tokens, "", "JSON list of token-id lists");
ABSL_FLAG(std::string, out, "", "where to write float32 logits");
ABSL_FLAG(bool, incremental, false, "prefill half, then one token per step");
ABSL_FLAG(int32_t, block_size, 16, "KV block size");
ABSL_FLAG(int32_t, greedy_steps, 0,
          "instead of logits: prefill the batch, then this many greedy decode steps sampled by the backend; "
          "--out gets the generated ids as JSON");
ABSL_FLAG(bool, cuda_graphs, true, "CUDA: replay graphs for decode steps");
ABSL_FLAG(std::string, gemm_algos, "", "CUDA: GEMM algorithm table from tandem-gemm-tune");

namespace tandem {
namespace {

int Fail(const std::string& s) {
  std::cerr << "tandem-logits: " << s << "\n";
  return 1;
}

// Prefills every sequence in one batch, then decodes `steps` tokens for
// all of them together, sampling greedily through the backend (on the GPU
// for CUDA). Writes [[ids of seq 0], ...] as JSON.
int GreedyDecode(ModelBackend& backend, const std::vector<std::vector<int32_t>>& prompts, int32_t bs, int32_t steps,
                 const std::string& out_path) {
  SamplingParams greedy;
  greedy.temperature = 0;
  std::vector<std::vector<int32_t>> tokens = prompts, tables;
  int32_t next = 0;
  for (const auto& s : prompts) {
    std::vector<int32_t> t((s.size() + steps + bs - 1) / bs);
    std::iota(t.begin(), t.end(), next);
    next += static_cast<int32_t>(t.size());
    tables.push_back(std::move(t));
  }
  std::vector<std::vector<int32_t>> generated(prompts.size());
  for (int32_t step = 0; step <= steps - 1; ++step) {
    ForwardBatch batch;
    for (size_t i = 0; i < tokens.size(); ++i) {
      const size_t done = step == 0 ? 0 : tokens[i].size() - 1;
      batch.seqs.push_back({std::span<const int32_t>(tokens[i]).subspan(done), static_cast<int32_t>(done), tables[i],
                            false});
      batch.sample.push_back({&greedy, {}, 0, static_cast<uint64_t>(step)});
    }
    ForwardOutput out;
    absl::Status s = backend.Forward(batch, &out);
    if (!s.ok()) return Fail(s.ToString());
    for (size_t i = 0; i < tokens.size(); ++i) {
      const int32_t t = backend.samples_on_device() ? out.samples[i].token
                                                    : static_cast<int32_t>(std::max_element(out.Row(out.row_offset[i]).begin(),
                                                                                            out.Row(out.row_offset[i]).end()) -
                                                                           out.Row(out.row_offset[i]).begin());
      generated[i].push_back(t);
    }
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i].push_back(generated[i].back());
  }
  std::ofstream(out_path) << nlohmann::json(generated).dump() << "\n";
  std::cout << "generated " << steps << " tokens for " << prompts.size() << " sequences\n";
  return 0;
}

int Main() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  auto config = LoadModelConfig(dir + "/config.json");
  if (!config.ok()) return Fail(config.status().ToString());
  auto weights = OpenSafetensorsDir(dir);
  if (!weights.ok()) return Fail(weights.status().ToString());
  std::ifstream in(absl::GetFlag(FLAGS_tokens));
  const auto seqs = nlohmann::json::parse(in).get<std::vector<std::vector<int32_t>>>();
  int64_t total = 0;
  for (const auto& s : seqs) total += static_cast<int64_t>(s.size());
  const int32_t bs = absl::GetFlag(FLAGS_block_size);
  int32_t blocks = 0;
  for (const auto& s : seqs) blocks += static_cast<int32_t>((s.size() + bs - 1) / bs);

  std::unique_ptr<ModelBackend> backend;
  if (absl::GetFlag(FLAGS_device) == "cuda") {
    CudaBackendOptions o;
    o.block_size = bs;
    o.num_kv_blocks = blocks + 8 + static_cast<int32_t>(seqs.size()) * (absl::GetFlag(FLAGS_greedy_steps) / bs + 1);
    o.max_context = config->max_position_embeddings;
    o.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
    o.gemm_algos = absl::GetFlag(FLAGS_gemm_algos);
    auto b = CreateCudaBackend(*config, **weights, o);
    if (!b.ok()) return Fail(b.status().ToString());
    backend = std::move(*b);
  } else {
    CpuBackendOptions o;
    o.block_size = bs;
    o.num_kv_blocks = blocks + 8 + static_cast<int32_t>(seqs.size()) * (absl::GetFlag(FLAGS_greedy_steps) / bs + 1);
    o.num_threads = 16;
    auto b = CpuBackend::Create(*config, **weights, o);
    if (!b.ok()) return Fail(b.status().ToString());
    backend = std::move(*b);
  }
  // Contiguous block ranges per sequence.
  std::vector<std::vector<int32_t>> tables;
  int32_t next = 0;
  for (const auto& s : seqs) {
    std::vector<int32_t> t((s.size() + bs - 1) / bs);
    std::iota(t.begin(), t.end(), next);
    next += static_cast<int32_t>(t.size());
    tables.push_back(std::move(t));
  }
  if (const int32_t steps = absl::GetFlag(FLAGS_greedy_steps); steps > 0) {
    return GreedyDecode(*backend, seqs, bs, steps, absl::GetFlag(FLAGS_out));
  }
  const int64_t vocab = config->vocab_size;
  std::vector<float> logits(static_cast<size_t>(total * vocab));
  std::vector<int64_t> seq_start;
  for (int64_t acc = 0; const auto& s : seqs) {
    seq_start.push_back(acc);
    acc += static_cast<int64_t>(s.size());
  }
  // Steps: (sequence, first position, count) chunks run together.
  std::vector<size_t> done(seqs.size(), 0);
  const bool incremental = absl::GetFlag(FLAGS_incremental);
  for (bool first = true;; first = false) {
    ForwardBatch batch;
    std::vector<size_t> members, begins;
    for (size_t i = 0; i < seqs.size(); ++i) {
      if (done[i] >= seqs[i].size()) continue;
      const size_t n = !incremental ? seqs[i].size() : first ? std::max<size_t>(1, seqs[i].size() / 2) : 1;
      batch.seqs.push_back({std::span<const int32_t>(seqs[i]).subspan(done[i], n), static_cast<int32_t>(done[i]),
                            tables[i], true});
      members.push_back(i);
      begins.push_back(done[i]);
      done[i] += n;
    }
    if (members.empty()) break;
    ForwardOutput out;
    absl::Status s = backend->Forward(batch, &out);
    if (!s.ok()) return Fail(s.ToString());
    for (size_t m = 0; m < members.size(); ++m) {
      const size_t i = members[m];
      for (size_t r = 0; r < batch.seqs[m].tokens.size(); ++r) {
        auto row = out.Row(out.row_offset[m] + static_cast<int64_t>(r));
        std::copy(row.begin(), row.end(), logits.begin() + (seq_start[i] + begins[m] + r) * vocab);
      }
    }
  }
  std::ofstream(absl::GetFlag(FLAGS_out), std::ios::binary)
      .write(reinterpret_cast<const char*>(logits.data()), static_cast<std::streamsize>(logits.size() * 4));
  std::cout << "wrote " << total << " x " << vocab << " logits\n";
  return 0;
}

}  // namespace
}  // namespace tandem

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return tandem::Main();
}
