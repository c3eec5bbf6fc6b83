// The CPU backend against the naive reference: paged, cached, chunked and
// batched forward passes give the reference's logits to 1e-5 relative
// error, and a sequence's logits are bit-identical whatever its batch.
#include "common/engine/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "gtest/gtest.h"
#include "tests/common/engine/reference_model.h"

namespace tandem {
namespace {

constexpr double kMaxRelativeError = 1e-5;

ModelConfig BaseConfig() {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 101;
  c.hidden_size = 48;
  c.intermediate_size = 80;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 6;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 1024;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  return c;
}

struct NamedConfig {
  std::string name;
  ModelConfig config;
  DType weight_dtype;
};

// Llama 3 (GQA, llama3 rope scaling with a short original context so the
// scaled band is exercised), Qwen2 (q/k/v bias, tied embeddings), Llama 2
// (MHA, plain rope, bf16 weights) and linear rope scaling.
std::vector<NamedConfig> Configs() {
  std::vector<NamedConfig> out;
  ModelConfig llama3 = BaseConfig();
  llama3.rope_theta = 500000.0;
  llama3.rope_scaling = {RopeScaling::Type::kLlama3, 8.0, 1.0, 4.0, 32};
  out.push_back({"llama3", llama3, DType::kF32});
  ModelConfig qwen2 = BaseConfig();
  qwen2.architecture = "Qwen2ForCausalLM";
  qwen2.model_type = "qwen2";
  qwen2.attention_bias = true;
  qwen2.tie_word_embeddings = true;
  qwen2.num_key_value_heads = 3;
  out.push_back({"qwen2", qwen2, DType::kF32});
  ModelConfig llama2 = BaseConfig();
  llama2.num_key_value_heads = llama2.num_attention_heads;
  out.push_back({"llama2", llama2, DType::kBF16});
  ModelConfig linear = BaseConfig();
  linear.rope_scaling.type = RopeScaling::Type::kLinear;
  linear.rope_scaling.factor = 4.0;
  out.push_back({"linear-rope", linear, DType::kF32});
  return out;
}

std::vector<int32_t> Tokens(int n, int salt, int vocab) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (i * 37 + salt * 11 + 5) % vocab;
  return t;
}

double RelativeError(std::span<const float> got, const std::vector<double>& want) {
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(got[i] - want[i]));
    max_ref = std::max(max_ref, std::abs(want[i]));
  }
  return max_diff / max_ref;
}

// Hands out blocks of the pool in a scrambled order, so block tables are
// never contiguous runs.
class ScrambledBlocks {
 public:
  ScrambledBlocks(int32_t num_blocks, uint32_t seed) : order_(num_blocks) {
    std::iota(order_.begin(), order_.end(), 0);
    std::shuffle(order_.begin(), order_.end(), std::mt19937(seed));
  }
  std::vector<int32_t> Take(int32_t n) {
    std::vector<int32_t> t(order_.begin() + next_, order_.begin() + next_ + n);
    next_ += n;
    return t;
  }

 private:
  std::vector<int32_t> order_;
  int32_t next_ = 0;
};

std::unique_ptr<CpuBackend> MakeBackend(const ModelConfig& c, const WeightStore& w, int32_t block_size,
                                        int threads = 2, int32_t blocks = 256) {
  CpuBackendOptions o;
  o.block_size = block_size;
  o.num_kv_blocks = blocks;
  o.num_threads = threads;
  // The fp32 math against the double reference (bf16 weights included);
  // the bf16-activation mode is cpu_backend_bf16_test's.
  o.bf16_activations = false;
  auto b = CpuBackend::Create(c, w, o);
  EXPECT_TRUE(b.ok()) << b.status();
  return std::move(*b);
}

TEST(CpuBackendTest, PrefillLogitsMatchTheReferenceAtEveryPosition) {
  for (const NamedConfig& nc : Configs()) {
    auto weights = MakeDummyWeightStore(nc.config, 3, nc.weight_dtype, 0.3f);
    for (int32_t block_size : {1, 4, 16}) {
      auto backend = MakeBackend(nc.config, *weights, block_size);
      ScrambledBlocks blocks(256, block_size);
      for (int len : {1, 7, 16, 45}) {
        const std::vector<int32_t> tokens = Tokens(len, len, nc.config.vocab_size);
        const auto want = testing::ReferenceLogits(nc.config, *weights, tokens);
        const std::vector<int32_t> table = blocks.Take((len + block_size - 1) / block_size);
        ForwardBatch batch;
        batch.seqs.push_back({tokens, 0, table, /*all_logits=*/true});
        ForwardOutput out;
        ASSERT_TRUE(backend->Forward(batch, &out).ok());
        ASSERT_EQ(out.logits.size(), static_cast<size_t>(len * nc.config.vocab_size));
        for (int p = 0; p < len; ++p) {
          EXPECT_LT(RelativeError(out.Row(p), want[p]), kMaxRelativeError)
              << nc.name << " block_size " << block_size << " len " << len << " position " << p;
        }
      }
    }
  }
}

TEST(CpuBackendTest, ChunkedPrefillAndDecodeFromTheCacheMatchTheReference) {
  for (const NamedConfig& nc : Configs()) {
    auto weights = MakeDummyWeightStore(nc.config, 5, nc.weight_dtype, 0.3f);
    const int32_t block_size = 4;
    auto backend = MakeBackend(nc.config, *weights, block_size);
    const std::vector<int32_t> tokens = Tokens(40, 2, nc.config.vocab_size);
    const auto want = testing::ReferenceLogits(nc.config, *weights, tokens);
    const std::vector<int32_t> table = ScrambledBlocks(256, 9).Take(10);
    // Chunks of 13, 9, then one token at a time (decode steps).
    std::vector<int> chunks = {13, 9};
    while (std::accumulate(chunks.begin(), chunks.end(), 0) < 40) chunks.push_back(1);
    int done = 0;
    for (int n : chunks) {
      ForwardBatch batch;
      batch.seqs.push_back({std::span<const int32_t>(tokens).subspan(done, n), done, table, false});
      ForwardOutput out;
      ASSERT_TRUE(backend->Forward(batch, &out).ok());
      done += n;
      EXPECT_LT(RelativeError(out.Row(0), want[done - 1]), kMaxRelativeError)
          << nc.name << " after " << done << " tokens";
    }
  }
}

// One sequence's logits through prefill and three decode steps.
std::vector<std::vector<float>> RunSequence(CpuBackend& backend, const std::vector<int32_t>& tokens,
                                            int prompt_len, std::span<const int32_t> table,
                                            const std::function<void(ForwardBatch&, int)>& add_others) {
  std::vector<std::vector<float>> rows;
  int done = 0;
  for (int step = 0; done < static_cast<int>(tokens.size()); ++step) {
    const int n = step == 0 ? prompt_len : 1;
    ForwardBatch batch;
    add_others(batch, step);
    const size_t me = batch.seqs.size() / 2;  // in the middle of the others
    batch.seqs.insert(batch.seqs.begin() + me,
                      {std::span<const int32_t>(tokens).subspan(done, n), done, table, false});
    ForwardOutput out;
    EXPECT_TRUE(backend.Forward(batch, &out).ok());
    auto row = out.Row(out.row_offset[me]);
    rows.emplace_back(row.begin(), row.end());
    done += n;
  }
  return rows;
}

TEST(CpuBackendTest, LogitsAreBitIdenticalWhateverTheBatchAndThreadCount) {
  const ModelConfig config = Configs()[0].config;
  auto weights = MakeDummyWeightStore(config, 11, DType::kF32, 0.3f);
  const std::vector<int32_t> tokens = Tokens(23, 4, config.vocab_size);

  auto alone_backend = MakeBackend(config, *weights, 4, /*threads=*/1);
  const std::vector<int32_t> table = ScrambledBlocks(256, 1).Take(6);
  const auto alone = RunSequence(*alone_backend, tokens, 20, table, [](ForwardBatch&, int) {});

  // Three threads, and every step shares the batch with a long prefill and
  // a one-token prompt that asks for all its logits.
  auto crowded_backend = MakeBackend(config, *weights, 4, /*threads=*/3);
  ScrambledBlocks blocks(256, 2);
  const std::vector<int32_t> my_table = blocks.Take(6);
  std::vector<std::vector<int32_t>> other_tokens, other_tables;
  for (int i = 0; i < 8; ++i) {
    other_tokens.push_back(Tokens(30 + i, 7 + i, config.vocab_size));
    other_tables.push_back(blocks.Take(10));
  }
  const auto crowded = RunSequence(*crowded_backend, tokens, 20, my_table,
                                   [&](ForwardBatch& b, int step) {
                                     const auto& prefill = other_tokens[2 * step];
                                     b.seqs.push_back({prefill, 0, other_tables[2 * step], false});
                                     const auto& single = other_tokens[2 * step + 1];
                                     b.seqs.push_back({std::span<const int32_t>(single).first(1), 0,
                                                       other_tables[2 * step + 1], true});
                                   });
  ASSERT_EQ(alone.size(), crowded.size());
  for (size_t i = 0; i < alone.size(); ++i) {
    EXPECT_EQ(alone[i], crowded[i]) << "step " << i;  // bitwise
  }
}

TEST(CpuBackendTest, ReportsEachLayerOnceInOrder) {
  const ModelConfig config = Configs()[0].config;
  auto weights = MakeDummyWeightStore(config, 1, DType::kF32, 0.3f);
  auto backend = MakeBackend(config, *weights, 4);
  const std::vector<int32_t> tokens = Tokens(9, 1, config.vocab_size);
  const std::vector<int32_t> table = {7, 3, 5};
  std::vector<int> layers;
  ForwardBatch batch;
  batch.seqs.push_back({tokens, 0, table, false});
  batch.on_layer_done = [&](int l) {
    // The layer's K for the last token is already in its block.
    const float* k = static_cast<const float*>(backend->kv_pool().KeyBlock(l, 5));
    EXPECT_NE(k[0], 0.0f) << "layer " << l;
    layers.push_back(l);
  };
  ForwardOutput out;
  ASSERT_TRUE(backend->Forward(batch, &out).ok());
  EXPECT_EQ(layers, (std::vector<int>{0, 1, 2}));
}

TEST(CpuBackendTest, RejectsBadBatchesWithAClearError) {
  const ModelConfig config = Configs()[0].config;
  auto weights = MakeDummyWeightStore(config, 1, DType::kF32, 0.3f);
  auto backend = MakeBackend(config, *weights, 4, 1, /*blocks=*/8);
  const std::vector<int32_t> bad_token = {1, 2, 101};
  const std::vector<int32_t> good = {1, 2, 3, 4, 5};
  const std::vector<int32_t> one_block = {0};
  const std::vector<int32_t> out_of_pool = {0, 8};
  struct Case {
    SequenceChunk chunk;
    std::string message;
  } cases[] = {
      {{bad_token, 0, one_block, false}, "token id 101"},
      {{good, 0, one_block, false}, "cannot hold 5 positions"},
      {{good, 0, out_of_pool, false}, "block 8 is outside the KV pool"},
  };
  for (const Case& c : cases) {
    ForwardBatch batch;
    batch.seqs.push_back(c.chunk);
    ForwardOutput out;
    absl::Status s = backend->Forward(batch, &out);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find(c.message), std::string::npos) << s;
  }
}

}  // namespace
}  // namespace tandem
