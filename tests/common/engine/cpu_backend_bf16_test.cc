// The CPU backend's bf16-activation mode: on by default for bf16 weights,
// every activation it hands on is a bf16 value, it equals a naive forward
// pass written here with the same rounding points (those of a bf16 Hugging
// Face model and the CUDA backend) bit for bit, it stays batch- and
// thread-invariant, and turned off it keeps the fp32 results.
#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/engine/cpu_backend.h"
#include "common/engine/cpu_kernels.h"
#include "common/engine/engine.h"
#include "common/engine/model_loader.h"
#include "gtest/gtest.h"
#include "tests/common/engine/reference_model.h"

namespace tandem {
namespace {

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
  c.eos_token_ids = {1};
  return c;
}

struct NamedConfig {
  std::string name;
  ModelConfig config;
};

// Llama 3 (GQA, llama3 rope scaling whose scaled band is exercised), Qwen2
// (q/k/v bias, tied embeddings, odd GQA group) and Llama 2 (MHA, plain rope).
std::vector<NamedConfig> Configs() {
  std::vector<NamedConfig> out;
  ModelConfig llama3 = BaseConfig();
  llama3.rope_theta = 500000.0;
  llama3.rope_scaling = {RopeScaling::Type::kLlama3, 8.0, 1.0, 4.0, 32};
  out.push_back({"llama3", llama3});
  ModelConfig qwen2 = BaseConfig();
  qwen2.architecture = "Qwen2ForCausalLM";
  qwen2.model_type = "qwen2";
  qwen2.attention_bias = true;
  qwen2.tie_word_embeddings = true;
  qwen2.num_key_value_heads = 3;
  out.push_back({"qwen2", qwen2});
  ModelConfig llama2 = BaseConfig();
  llama2.num_key_value_heads = llama2.num_attention_heads;
  out.push_back({"llama2", llama2});
  return out;
}

std::vector<int32_t> Tokens(int n, int salt, int vocab) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (i * 37 + salt * 11 + 5) % vocab;
  return t;
}

bool IsBf16(float v) { return BF16ToFloat(FloatToBF16(v)) == v; }

// Blocks of the pool in a scrambled order, so tables are never contiguous.
std::vector<int32_t> ScrambledTable(int32_t num_blocks, int32_t n, uint32_t seed) {
  std::vector<int32_t> order(num_blocks);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(seed));
  return {order.begin(), order.begin() + n};
}

std::unique_ptr<CpuBackend> MakeBackend(const ModelConfig& c, const WeightStore& w, int32_t block_size,
                                        std::optional<bool> bf16, int threads = 2, int32_t blocks = 256) {
  CpuBackendOptions o;
  o.block_size = block_size;
  o.num_kv_blocks = blocks;
  o.num_threads = threads;
  o.bf16_activations = bf16;
  auto b = CpuBackend::Create(c, w, o);
  EXPECT_TRUE(b.ok()) << b.status();
  return std::move(*b);
}

// ---------------------------------------------------------------------------
// The naive reference: one sequence, no cache, every position recomputed,
// weights read by Hugging Face name (no fusion). Arithmetic is fp32 with a
// bf16 rounding, R(), wherever a bf16 model rounds; sums are taken in the
// backend's order (projections and norms: eight interleaved partial sums
// combined pairwise; attention: position by position), so that the result
// is bit-identical rather than merely close.

float R(float v) { return RoundBf16(v); }

float Dot8(const float* a, const float* b, int64_t k) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  for (int j = 0; i < k; ++i, ++j) acc[j] += a[i] * b[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

using Rows = std::vector<std::vector<float>>;

std::vector<float> Load(const WeightStore& w, const std::string& name) {
  auto t = w.Get(name);
  EXPECT_TRUE(t.ok()) << t.status();
  return t->ToFloat();
}

// bf16(x W^T + b), W [out][in].
Rows Linear(const Rows& x, const std::vector<float>& w, int64_t out, const std::vector<float>* bias = nullptr) {
  Rows y(x.size(), std::vector<float>(out));
  const int64_t in = static_cast<int64_t>(x[0].size());
  for (size_t r = 0; r < x.size(); ++r) {
    for (int64_t o = 0; o < out; ++o) {
      y[r][o] = R(Dot8(x[r].data(), w.data() + o * in, in) + (bias ? (*bias)[o] : 0.0f));
    }
  }
  return y;
}

// bf16(w * bf16(x / rms)).
Rows Norm(const Rows& x, const std::vector<float>& w, float eps) {
  Rows y = x;
  for (auto& row : y) {
    const int64_t n = static_cast<int64_t>(row.size());
    const float inv = 1.0f / std::sqrt(Dot8(row.data(), row.data(), n) / static_cast<float>(n) + eps);
    for (int64_t i = 0; i < n; ++i) row[i] = R(w[i] * R(row[i] * inv));
  }
  return y;
}

// apply_rotary_pos_emb in bf16: cos/sin of the fp32 angle rounded, then
// q*cos + rotate_half(q)*sin with every product and the sum rounded.
void Rope(std::vector<float>& row, int64_t heads, int64_t hd, int64_t pos, const std::vector<float>& inv_freq) {
  for (int64_t h = 0; h < heads; ++h) {
    float* x = row.data() + h * hd;
    std::vector<float> rotated(hd);
    for (int64_t i = 0; i < hd / 2; ++i) {
      const float angle = static_cast<float>(pos) * inv_freq[i];
      const float c = R(std::cos(angle)), s = R(std::sin(angle));
      const float x1 = x[i], x2 = x[i + hd / 2];
      rotated[i] = R(R(x1 * c) + R(R(-x2) * s));
      rotated[i + hd / 2] = R(R(x2 * c) + R(x1 * s));
    }
    std::copy(rotated.begin(), rotated.end(), x);
  }
}

struct RefState {
  Rows logits;
  std::vector<Rows> k, v;  // per layer: [position][kv_size], as they enter the cache
};

RefState Bf16Reference(const ModelConfig& c, const WeightStore& w, const std::vector<int32_t>& tokens) {
  const int64_t n = static_cast<int64_t>(tokens.size()), hidden = c.hidden_size, hd = c.head_dim;
  const int64_t nh = c.num_attention_heads, nkv = c.num_key_value_heads, qs = c.q_size(), kvs = c.kv_size();
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // The frequency table itself is checked against an independent formula
  // by cpu_backend_test's fp32 reference; here it is only cast to fp32.
  std::vector<float> inv_freq;
  for (double f : RopeInverseFrequencies(c)) inv_freq.push_back(static_cast<float>(f));

  const std::vector<float> embed = Load(w, "model.embed_tokens.weight");
  Rows x(n, std::vector<float>(hidden));
  for (int64_t t = 0; t < n; ++t) {
    std::copy_n(embed.begin() + tokens[t] * hidden, hidden, x[t].begin());
  }
  RefState st;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    auto proj = [&](const Rows& in, const std::string& name, int64_t out) {
      if (c.attention_bias && name.find("self_attn") != std::string::npos && name.find("o_proj") == std::string::npos) {
        const std::vector<float> b = Load(w, p + name + ".bias");
        return Linear(in, Load(w, p + name + ".weight"), out, &b);
      }
      return Linear(in, Load(w, p + name + ".weight"), out);
    };
    const Rows h = Norm(x, Load(w, p + "input_layernorm.weight"), eps);
    Rows q = proj(h, "self_attn.q_proj", qs), k = proj(h, "self_attn.k_proj", kvs), v = proj(h, "self_attn.v_proj", kvs);
    for (int64_t t = 0; t < n; ++t) {
      Rope(q[t], nh, hd, t, inv_freq);
      Rope(k[t], nkv, hd, t, inv_freq);
    }
    // FlashAttention's numerics: fp32 scores and softmax, bf16 P in P.V,
    // fp32 accumulation, divided by the fp32 sum, output rounded.
    Rows attn(n, std::vector<float>(qs));
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t hh = 0; hh < nh; ++hh) {
        const int64_t kh = hh / (nh / nkv);
        std::vector<float> s(t + 1);
        float mx = -INFINITY;
        for (int64_t j = 0; j <= t; ++j) {
          float dot = 0.0f;
          for (int64_t d = 0; d < hd; ++d) dot += q[t][hh * hd + d] * k[j][kh * hd + d];
          s[j] = dot * scale;
          mx = std::max(mx, s[j]);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j <= t; ++j) {
          s[j] = std::exp(s[j] - mx);
          sum += s[j];
        }
        std::vector<float> acc(hd, 0.0f);
        for (int64_t j = 0; j <= t; ++j) {
          for (int64_t d = 0; d < hd; ++d) acc[d] += R(s[j]) * v[j][kh * hd + d];
        }
        for (int64_t d = 0; d < hd; ++d) attn[t][hh * hd + d] = R(acc[d] * (1.0f / sum));
      }
    }
    const Rows o = proj(attn, "self_attn.o_proj", hidden);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < hidden; ++i) x[t][i] = R(x[t][i] + o[t][i]);
    }
    const Rows h2 = Norm(x, Load(w, p + "post_attention_layernorm.weight"), eps);
    const Rows g = proj(h2, "mlp.gate_proj", c.intermediate_size), u = proj(h2, "mlp.up_proj", c.intermediate_size);
    Rows act(n, std::vector<float>(c.intermediate_size));
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < c.intermediate_size; ++i) {
        act[t][i] = R(R(g[t][i] / (1.0f + std::exp(-g[t][i]))) * u[t][i]);
      }
    }
    const Rows down = proj(act, "mlp.down_proj", hidden);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < hidden; ++i) x[t][i] = R(x[t][i] + down[t][i]);
    }
    st.k.push_back(k);
    st.v.push_back(v);
  }
  const Rows last = Norm(x, Load(w, "model.norm.weight"), eps);
  st.logits = Linear(last, Load(w, c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"),
                     c.vocab_size);
  return st;
}

// Counts elements that differ (bitwise) and reports the largest difference.
int64_t Mismatches(std::span<const float> got, const std::vector<float>& want, float* max_diff) {
  int64_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (got[i] != want[i]) {
      ++bad;
      *max_diff = std::max(*max_diff, std::abs(got[i] - want[i]));
    }
  }
  return bad;
}

// ---------------------------------------------------------------------------

TEST(CpuBackendBf16Test, OnByDefaultExactlyForBf16WeightsAndForcedByTheOption) {
  const ModelConfig c = BaseConfig();
  auto bf16 = MakeDummyWeightStore(c, 1, DType::kBF16, 0.3f);
  auto f32 = MakeDummyWeightStore(c, 1, DType::kF32, 0.3f);
  auto f16 = MakeDummyWeightStore(c, 1, DType::kF16, 0.3f);
  EXPECT_TRUE(MakeBackend(c, *bf16, 4, std::nullopt)->bf16_activations());
  EXPECT_FALSE(MakeBackend(c, *f32, 4, std::nullopt)->bf16_activations());
  EXPECT_FALSE(MakeBackend(c, *f16, 4, std::nullopt)->bf16_activations());
  EXPECT_FALSE(MakeBackend(c, *bf16, 4, false)->bf16_activations());
  EXPECT_TRUE(MakeBackend(c, *f32, 4, true)->bf16_activations());

  // Through CreateBackend and the flag's spelling.
  EXPECT_EQ(*ParseBf16ActivationsFlag("auto"), std::nullopt);
  EXPECT_EQ(*ParseBf16ActivationsFlag("on"), std::optional<bool>(true));
  EXPECT_EQ(*ParseBf16ActivationsFlag("off"), std::optional<bool>(false));
  EXPECT_EQ(ParseBf16ActivationsFlag("maybe").status().code(), absl::StatusCode::kInvalidArgument);
  LoadedModel m;
  m.config = c;
  m.weights = MakeDummyWeightStore(c, 1, DType::kBF16, 0.3f);
  for (std::optional<bool> mode : {std::optional<bool>(), std::optional<bool>(false)}) {
    BackendOptions o;
    o.num_kv_blocks = 8;
    o.num_threads = 1;
    o.cpu_bf16_activations = mode;
    auto b = CreateBackend(m, o);
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(static_cast<CpuBackend&>(**b).bf16_activations(), mode.value_or(true));
  }
}

TEST(CpuBackendBf16Test, LogitsAndCachedKvAreExactBf16Values) {
  for (const NamedConfig& nc : Configs()) {
    auto weights = MakeDummyWeightStore(nc.config, 3, DType::kBF16, 0.3f);
    for (bool bf16 : {true, false}) {
      auto backend = MakeBackend(nc.config, *weights, 4, bf16);
      const std::vector<int32_t> tokens = Tokens(19, 2, nc.config.vocab_size);
      const std::vector<int32_t> table = ScrambledTable(256, 5, 4);
      ForwardBatch batch;
      batch.seqs.push_back({tokens, 0, table, /*all_logits=*/true});
      ForwardOutput out;
      ASSERT_TRUE(backend->Forward(batch, &out).ok());
      int64_t not_bf16 = std::count_if(out.logits.begin(), out.logits.end(), [](float v) { return !IsBf16(v); });
      int64_t kv_not_bf16 = 0, kv_nonzero = 0;
      const KvLayout& layout = backend->kv_pool().layout();
      const int64_t row = layout.num_kv_heads * layout.head_dim;
      for (int l = 0; l < layout.num_layers; ++l) {
        for (int32_t pos = 0; pos < 19; ++pos) {
          const int64_t off = (pos % 4) * row;
          for (void* blk : {backend->kv_pool().KeyBlock(l, table[pos / 4]), backend->kv_pool().ValueBlock(l, table[pos / 4])}) {
            const float* kv = static_cast<const float*>(blk) + off;
            for (int64_t i = 0; i < row; ++i) {
              kv_not_bf16 += !IsBf16(kv[i]);
              kv_nonzero += kv[i] != 0.0f;
            }
          }
        }
      }
      EXPECT_GT(kv_nonzero, 0) << nc.name;
      if (bf16) {
        EXPECT_EQ(not_bf16, 0) << nc.name;
        EXPECT_EQ(kv_not_bf16, 0) << nc.name;
      } else {
        // fp32 mode really is different: most values are not bf16 values.
        EXPECT_GT(not_bf16, static_cast<int64_t>(out.logits.size()) / 2) << nc.name;
        EXPECT_GT(kv_not_bf16, kv_nonzero / 2) << nc.name;
      }
    }
  }
}

TEST(CpuBackendBf16Test, EqualsTheNaiveBf16ReferenceBitForBit) {
  for (const NamedConfig& nc : Configs()) {
    auto weights = MakeDummyWeightStore(nc.config, 5, DType::kBF16, 0.3f);
    const int len = 37;
    const std::vector<int32_t> tokens = Tokens(len, 3, nc.config.vocab_size);
    const RefState ref = Bf16Reference(nc.config, *weights, tokens);
    for (int32_t block_size : {1, 4, 16}) {
      auto backend = MakeBackend(nc.config, *weights, block_size, std::nullopt, /*threads=*/3);
      ASSERT_TRUE(backend->bf16_activations());
      const std::vector<int32_t> table = ScrambledTable(256, (len + block_size - 1) / block_size, block_size);
      // One prefill with every position's logits.
      ForwardBatch batch;
      batch.seqs.push_back({tokens, 0, table, /*all_logits=*/true});
      ForwardOutput out;
      ASSERT_TRUE(backend->Forward(batch, &out).ok());
      for (int p = 0; p < len; ++p) {
        float diff = 0;
        EXPECT_EQ(Mismatches(out.Row(p), ref.logits[p], &diff), 0)
            << nc.name << " block_size " << block_size << " position " << p << " max diff " << diff;
      }
      // K/V in the pool are the reference's, value for value.
      const int64_t kvs = nc.config.kv_size();
      int64_t kv_bad = 0;
      for (int l = 0; l < nc.config.num_hidden_layers; ++l) {
        for (int p = 0; p < len; ++p) {
          const int64_t off = (p % block_size) * kvs;
          const float* k = static_cast<const float*>(backend->kv_pool().KeyBlock(l, table[p / block_size])) + off;
          const float* v = static_cast<const float*>(backend->kv_pool().ValueBlock(l, table[p / block_size])) + off;
          for (int64_t i = 0; i < kvs; ++i) kv_bad += (k[i] != ref.k[l][p][i]) + (v[i] != ref.v[l][p][i]);
        }
      }
      EXPECT_EQ(kv_bad, 0) << nc.name << " block_size " << block_size;
    }
    // Chunked prefill, then decode steps from the cache, on a fresh pool.
    auto backend = MakeBackend(nc.config, *weights, 4, std::nullopt);
    const std::vector<int32_t> table = ScrambledTable(256, 10, 9);
    int done = 0;
    for (int n : {13, 9, 1, 1, 5, 1, 1, 1, 1, 1, 1, 1, 1}) {
      ForwardBatch batch;
      batch.seqs.push_back({std::span<const int32_t>(tokens).subspan(done, n), done, table, false});
      ForwardOutput out;
      ASSERT_TRUE(backend->Forward(batch, &out).ok());
      done += n;
      float diff = 0;
      EXPECT_EQ(Mismatches(out.Row(0), ref.logits[done - 1], &diff), 0)
          << nc.name << " after " << done << " tokens, max diff " << diff;
    }
    ASSERT_EQ(done, len);
  }
}

double RelativeError(std::span<const float> got, const std::vector<double>& want) {
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(got[i] - want[i]));
    max_ref = std::max(max_ref, std::abs(want[i]));
  }
  return max_diff / max_ref;
}

TEST(CpuBackendBf16Test, TurnedOffKeepsTheFp32ResultsAndOnDiffersFromThem) {
  for (const NamedConfig& nc : Configs()) {
    auto weights = MakeDummyWeightStore(nc.config, 7, DType::kBF16, 0.3f);
    const std::vector<int32_t> tokens = Tokens(29, 1, nc.config.vocab_size);
    const auto want = testing::ReferenceLogits(nc.config, *weights, tokens);  // double precision
    const std::vector<int32_t> table = ScrambledTable(256, 8, 3);
    double err[2] = {0, 0};
    for (bool bf16 : {false, true}) {
      auto backend = MakeBackend(nc.config, *weights, 4, bf16);
      ForwardBatch batch;
      batch.seqs.push_back({tokens, 0, table, /*all_logits=*/true});
      ForwardOutput out;
      ASSERT_TRUE(backend->Forward(batch, &out).ok());
      for (int p = 0; p < 29; ++p) err[bf16] = std::max(err[bf16], RelativeError(out.Row(p), want[p]));
    }
    EXPECT_LT(err[0], 1e-5) << nc.name << ": fp32 mode left the fp32 math";
    // bf16 mode is a different (rounded) computation of the same model.
    EXPECT_GT(err[1], 1e-4) << nc.name;
    EXPECT_LT(err[1], 5e-2) << nc.name;
  }
}

TEST(CpuBackendBf16Test, ForcedOnRoundsFp32WeightsAsABf16CheckpointWould) {
  const ModelConfig c = Configs()[1].config;
  // The dummy store draws the same fp32 values whatever the dtype and
  // rounds them to nearest for bf16.
  auto f32 = MakeDummyWeightStore(c, 9, DType::kF32, 0.3f);
  auto bf16 = MakeDummyWeightStore(c, 9, DType::kBF16, 0.3f);
  auto forced = MakeBackend(c, *f32, 4, true);
  auto native = MakeBackend(c, *bf16, 4, std::nullopt);
  auto plain = MakeBackend(c, *f32, 4, std::nullopt);
  const std::vector<int32_t> tokens = Tokens(21, 5, c.vocab_size);
  const std::vector<int32_t> table = ScrambledTable(256, 6, 1);
  std::vector<float> logits[3];
  CpuBackend* backends[3] = {forced.get(), native.get(), plain.get()};
  for (int i = 0; i < 3; ++i) {
    ForwardBatch batch;
    batch.seqs.push_back({tokens, 0, table, /*all_logits=*/true});
    ForwardOutput out;
    ASSERT_TRUE(backends[i]->Forward(batch, &out).ok());
    logits[i] = out.logits;
  }
  EXPECT_EQ(logits[0], logits[1]);
  EXPECT_NE(logits[0], logits[2]);
}

// One sequence's logits through prefill and three decode steps, placed in
// the middle of whatever `add_others` puts in each batch.
std::vector<std::vector<float>> RunSequence(CpuBackend& backend, const std::vector<int32_t>& tokens, int prompt_len,
                                            std::span<const int32_t> table,
                                            const std::function<void(ForwardBatch&, int)>& add_others) {
  std::vector<std::vector<float>> rows;
  int done = 0;
  for (int step = 0; done < static_cast<int>(tokens.size()); ++step) {
    const int n = step == 0 ? prompt_len : 1;
    ForwardBatch batch;
    add_others(batch, step);
    const size_t me = batch.seqs.size() / 2;
    batch.seqs.insert(batch.seqs.begin() + me, {std::span<const int32_t>(tokens).subspan(done, n), done, table, false});
    ForwardOutput out;
    EXPECT_TRUE(backend.Forward(batch, &out).ok());
    auto row = out.Row(out.row_offset[me]);
    rows.emplace_back(row.begin(), row.end());
    done += n;
  }
  return rows;
}

TEST(CpuBackendBf16Test, LogitsAreBitIdenticalWhateverTheBatchAndThreadCount) {
  for (const NamedConfig& nc : Configs()) {
    const ModelConfig& config = nc.config;
    auto weights = MakeDummyWeightStore(config, 11, DType::kBF16, 0.3f);
    const std::vector<int32_t> tokens = Tokens(23, 4, config.vocab_size);

    auto alone_backend = MakeBackend(config, *weights, 4, std::nullopt, /*threads=*/1);
    ASSERT_TRUE(alone_backend->bf16_activations());
    const auto alone =
        RunSequence(*alone_backend, tokens, 20, ScrambledTable(256, 6, 1), [](ForwardBatch&, int) {});

    auto crowded_backend = MakeBackend(config, *weights, 4, std::nullopt, /*threads=*/3);
    const std::vector<int32_t> order = ScrambledTable(256, 256, 2);
    const std::vector<int32_t> my_table(order.begin(), order.begin() + 6);
    std::vector<std::vector<int32_t>> other_tokens, other_tables;
    for (int i = 0; i < 8; ++i) {
      other_tokens.push_back(Tokens(30 + i, 7 + i, config.vocab_size));
      other_tables.emplace_back(order.begin() + 6 + 10 * i, order.begin() + 16 + 10 * i);
    }
    const auto crowded = RunSequence(*crowded_backend, tokens, 20, my_table, [&](ForwardBatch& b, int step) {
      b.seqs.push_back({other_tokens[2 * step], 0, other_tables[2 * step], false});
      b.seqs.push_back(
          {std::span<const int32_t>(other_tokens[2 * step + 1]).first(1), 0, other_tables[2 * step + 1], true});
    });
    ASSERT_EQ(alone.size(), crowded.size());
    for (size_t i = 0; i < alone.size(); ++i) EXPECT_EQ(alone[i], crowded[i]) << nc.name << " step " << i;
  }
}

// Through the Engine (KV blocks reserved and released by its
// KvCacheManager): a sequence's sampled tokens do not depend on its batch,
// and no block is left behind.
TEST(CpuBackendBf16Test, EngineTokensDoNotDependOnTheBatchAndNoBlockLeaks) {
  const ModelConfig config = Configs()[0].config;
  auto weights = MakeDummyWeightStore(config, 13, DType::kBF16, 0.3f);
  Engine engine(MakeBackend(config, *weights, 4, std::nullopt, /*threads=*/2));
  auto make = [&](SeqId id, int len, int salt, uint64_t seed) {
    Sequence s;
    s.id = id;
    s.tokens = Tokens(len, salt, config.vocab_size);
    s.prompt_len = len;
    s.sampling.temperature = 0.8f;
    s.seed = seed;
    return s;
  };
  auto run = [&](std::vector<Sequence>& seqs, int steps) {
    std::vector<Sequence*> batch;
    for (Sequence& s : seqs) batch.push_back(&s);
    for (int i = 0; i < steps; ++i) {
      auto plan = PlanWhole(engine.kv_cache(), batch);
      ASSERT_TRUE(plan.ok()) << plan.status();
      auto r = engine.Step(*plan);
      EXPECT_TRUE(r.ok()) << r.status();
    }
  };
  std::vector<Sequence> alone = {make(1, 13, 1, 42)};
  run(alone, 10);
  const std::vector<int32_t> expected(alone[0].output().begin(), alone[0].output().end());
  engine.Release(alone[0]);
  std::vector<Sequence> crowd = {make(5, 29, 2, 1), make(1, 13, 1, 42), make(9, 1, 3, 2)};
  run(crowd, 10);
  EXPECT_EQ(std::vector<int32_t>(crowd[1].output().begin(), crowd[1].output().end()), expected);
  for (Sequence& s : crowd) engine.Release(s);
  EXPECT_EQ(engine.kv_cache().num_used_blocks(), 0);
}

}  // namespace
}  // namespace tandem
