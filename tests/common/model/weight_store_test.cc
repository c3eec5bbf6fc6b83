// The tensors a config needs, checkpoint validation, and dummy weights.
#include "common/model/weight_store.h"

#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include "common/model/safetensors_writer.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace tandem {
namespace {

ModelConfig Small(bool bias = false, bool tied = false) {
  ModelConfig c;
  c.architecture = bias ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
  c.vocab_size = 50;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.attention_bias = bias;
  c.tie_word_embeddings = tied;
  return c;
}

TEST(WeightStoreTest, ExpectedTensorsFollowTheConfig) {
  auto names = [](const ModelConfig& c) {
    std::set<std::string> s;
    int64_t params = 0;
    for (const TensorSpec& t : ExpectedTensors(c)) {
      s.insert(t.name);
      int64_t n = 1;
      for (int64_t d : t.shape) n *= d;
      params += n;
    }
    EXPECT_EQ(params, c.NumParameters());
    return s;
  };
  const auto plain = names(Small());
  EXPECT_TRUE(plain.contains("lm_head.weight"));
  EXPECT_TRUE(plain.contains("model.layers.1.mlp.down_proj.weight"));
  EXPECT_FALSE(plain.contains("model.layers.0.self_attn.q_proj.bias"));
  const auto qwen = names(Small(/*bias=*/true, /*tied=*/true));
  EXPECT_FALSE(qwen.contains("lm_head.weight"));
  EXPECT_TRUE(qwen.contains("model.layers.0.self_attn.k_proj.bias"));
}

TEST(WeightStoreTest, ValidationNamesTheMissingOrMisshapenTensor) {
  testing::TempDir dir;
  const ModelConfig config = Small();
  auto dummy = MakeDummyWeightStore(config, 1, DType::kBF16);
  std::vector<HostTensor> tensors;
  for (const TensorSpec& s : ExpectedTensors(config)) {
    if (s.name == "model.layers.1.mlp.up_proj.weight") continue;  // missing
    tensors.push_back(*dummy->Get(s.name));
  }
  const std::string path = (dir.path() / "model.safetensors").string();
  ASSERT_TRUE(WriteSafetensors(path, tensors, {}).ok());
  auto store = OpenSafetensorsDir(dir.str());
  ASSERT_TRUE(store.ok());
  absl::Status missing = ValidateWeights(**store, config);
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.message().find("model.layers.1.mlp.up_proj.weight"), std::string::npos) << missing;

  ModelConfig wider = config;
  wider.intermediate_size = 32;
  auto wrong = GetTensorChecked(**store, "model.layers.0.mlp.gate_proj.weight", {32, 16});
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("[24, 16]"), std::string::npos) << wrong.status();
  EXPECT_NE(wrong.status().message().find("[32, 16]"), std::string::npos) << wrong.status();
  EXPECT_NE(wrong.status().message().find(path), std::string::npos) << wrong.status();
  // Layer 0's gate_proj is the first tensor whose shape the wider config
  // contradicts.
  absl::Status misshapen = ValidateWeights(**store, wider);
  EXPECT_EQ(misshapen.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(misshapen.message().find("'model.layers.0.mlp.gate_proj.weight' in " + path +
                                     " has shape [24, 16] but the config needs [32, 16]"),
            std::string::npos)
      << misshapen;
}

TEST(WeightStoreTest, DummyWeightsAreDeterministicPerSeedAndInRange) {
  const ModelConfig config = Small();
  auto a = MakeDummyWeightStore(config, 7, DType::kF32, 0.1f);
  auto b = MakeDummyWeightStore(config, 7, DType::kF32, 0.1f);
  auto c = MakeDummyWeightStore(config, 8, DType::kF32, 0.1f);
  const std::string name = "model.layers.0.self_attn.q_proj.weight";
  const std::vector<float> va = a->Get(name)->ToFloat();
  EXPECT_EQ(va, b->Get(name)->ToFloat());
  EXPECT_NE(va, c->Get(name)->ToFloat());
  EXPECT_NE(va, a->Get("model.layers.1.self_attn.q_proj.weight")->ToFloat());
  float lo = 1, hi = -1;
  for (float v : va) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  EXPECT_GE(lo, -0.1f);
  EXPECT_LE(hi, 0.1f);
  EXPECT_LT(lo, -0.05f);  // actually spread over the range
  EXPECT_GT(hi, 0.05f);
  for (float v : a->Get("model.norm.weight")->ToFloat()) EXPECT_NEAR(v, 1.0f, 0.1f);
  EXPECT_EQ(a->Get("no.such.tensor").status().code(), absl::StatusCode::kNotFound);
}


TEST(WeightStoreTest, ExpectedShapesUseHeadDimNotHiddenSize) {
  ModelConfig c = Small(/*bias=*/true, /*tied=*/false);
  c.head_dim = 6;  // q_size 24, kv_size 12, unlike hidden 16
  std::map<std::string, std::vector<int64_t>> shapes;
  for (TensorSpec& t : ExpectedTensors(c)) shapes[t.name] = t.shape;
  using V = std::vector<int64_t>;
  EXPECT_EQ(shapes.at("model.embed_tokens.weight"), (V{50, 16}));
  EXPECT_EQ(shapes.at("model.layers.1.input_layernorm.weight"), (V{16}));
  EXPECT_EQ(shapes.at("model.layers.1.self_attn.q_proj.weight"), (V{24, 16}));
  EXPECT_EQ(shapes.at("model.layers.1.self_attn.k_proj.weight"), (V{12, 16}));
  EXPECT_EQ(shapes.at("model.layers.1.self_attn.v_proj.weight"), (V{12, 16}));
  EXPECT_EQ(shapes.at("model.layers.1.self_attn.o_proj.weight"), (V{16, 24}));
  EXPECT_EQ(shapes.at("model.layers.1.self_attn.q_proj.bias"), (V{24}));
  EXPECT_EQ(shapes.at("model.layers.1.self_attn.k_proj.bias"), (V{12}));
  EXPECT_EQ(shapes.at("model.layers.1.self_attn.v_proj.bias"), (V{12}));
  EXPECT_EQ(shapes.at("model.layers.1.post_attention_layernorm.weight"), (V{16}));
  EXPECT_EQ(shapes.at("model.layers.1.mlp.gate_proj.weight"), (V{24, 16}));
  EXPECT_EQ(shapes.at("model.layers.1.mlp.up_proj.weight"), (V{24, 16}));
  EXPECT_EQ(shapes.at("model.layers.1.mlp.down_proj.weight"), (V{16, 24}));
  EXPECT_EQ(shapes.at("model.norm.weight"), (V{16}));
  EXPECT_EQ(shapes.at("lm_head.weight"), (V{50, 16}));
  EXPECT_EQ(shapes.size(), 1 + 2 * 12 + 2u);
  EXPECT_FALSE(shapes.contains("model.layers.2.input_layernorm.weight"));
}

TEST(WeightStoreTest, CompleteCheckpointValidatesAndServesTheWrittenValues) {
  testing::TempDir dir;
  const ModelConfig config = Small(/*bias=*/true, /*tied=*/true);
  auto dummy = MakeDummyWeightStore(config, 3, DType::kF16);
  std::vector<HostTensor> first, second;
  const auto specs = ExpectedTensors(config);
  for (size_t i = 0; i < specs.size(); ++i) (i % 2 ? second : first).push_back(*dummy->Get(specs[i].name));
  ASSERT_TRUE(WriteSafetensors((dir.path() / "model-00001-of-00002.safetensors").string(), first, {}).ok());
  ASSERT_TRUE(WriteSafetensors((dir.path() / "model-00002-of-00002.safetensors").string(), second, {}).ok());
  auto store = OpenSafetensorsDir(dir.str());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE(ValidateWeights(**store, config).ok()) << ValidateWeights(**store, config);
  EXPECT_EQ((*store)->Names().size(), specs.size());
  for (const TensorSpec& s : specs) {
    auto got = GetTensorChecked(**store, s.name, s.shape);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->ToFloat(), dummy->Get(s.name)->ToFloat()) << s.name;
  }
  // The same checkpoint does not fit an untied config: lm_head is missing.
  ModelConfig untied = config;
  untied.tie_word_embeddings = false;
  absl::Status s = ValidateWeights(**store, untied);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("lm_head.weight"), std::string::npos) << s;
}

TEST(WeightStoreTest, DummyWeightsAreTheSameValuesInEveryDType) {
  const ModelConfig config = Small(/*bias=*/true);
  auto f32 = MakeDummyWeightStore(config, 42, DType::kF32, 0.5f);
  auto bf16 = MakeDummyWeightStore(config, 42, DType::kBF16, 0.5f);
  auto f16 = MakeDummyWeightStore(config, 42, DType::kF16, 0.5f);
  for (const char* name : {"model.embed_tokens.weight", "model.layers.1.self_attn.v_proj.bias",
                           "model.layers.0.input_layernorm.weight"}) {
    HostTensor a = *f32->Get(name), b = *bf16->Get(name), h = *f16->Get(name);
    EXPECT_EQ(a.dtype, DType::kF32);
    EXPECT_EQ(b.dtype, DType::kBF16);
    EXPECT_EQ(h.dtype, DType::kF16);
    EXPECT_EQ(b.nbytes, static_cast<size_t>(b.numel()) * 2);
    const std::vector<float> va = a.ToFloat(), vb = b.ToFloat(), vh = h.ToFloat();
    for (size_t i = 0; i < va.size(); ++i) {
      ASSERT_EQ(vb[i], BF16ToFloat(FloatToBF16(va[i]))) << name << "[" << i << "]";
      ASSERT_EQ(vh[i], F16ToFloat(FloatToF16(va[i]))) << name << "[" << i << "]";
    }
  }
}

TEST(WeightStoreTest, DummyBytesAreAFunctionOfSeedAndName) {
  const ModelConfig config = Small();
  auto a = MakeDummyWeightStore(config, 99, DType::kBF16);
  auto b = MakeDummyWeightStore(config, 99, DType::kBF16);
  auto c = MakeDummyWeightStore(config, 100, DType::kBF16);
  // Asked in a different order, the second store still yields the same bytes.
  std::vector<std::string> names = a->Names();
  std::vector<std::string> reversed(names.rbegin(), names.rend());
  for (const std::string& n : reversed) ASSERT_TRUE(b->Get(n).ok());
  size_t differing = 0;
  for (const std::string& n : names) {
    HostTensor ta = *a->Get(n), tb = *b->Get(n), tc = *c->Get(n);
    ASSERT_EQ(ta.nbytes, tb.nbytes);
    EXPECT_EQ(std::memcmp(ta.data, tb.data, ta.nbytes), 0) << n;
    differing += std::memcmp(ta.data, tc.data, ta.nbytes) != 0;
    EXPECT_EQ(ta.source, "dummy weights");
  }
  EXPECT_EQ(differing, names.size());
  std::set<std::string> expected;
  for (const TensorSpec& s : ExpectedTensors(config)) expected.insert(s.name);
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), expected);
}

TEST(WeightStoreTest, DummyValuesAreSpreadUniformly) {
  ModelConfig config = Small();
  config.vocab_size = 2000;  // 32000 values in the embedding
  auto store = MakeDummyWeightStore(config, 5, DType::kF32, 0.2f);
  const std::vector<float> v = store->Get("model.embed_tokens.weight")->ToFloat();
  double sum = 0;
  size_t inner = 0;
  for (float x : v) {
    ASSERT_GE(x, -0.2f);
    ASSERT_LE(x, 0.2f);
    sum += x;
    inner += std::fabs(x) < 0.1f;
  }
  EXPECT_NEAR(sum / v.size(), 0.0, 0.005);
  EXPECT_NEAR(static_cast<double>(inner) / v.size(), 0.5, 0.02);  // uniform: half within scale/2
}

TEST(WeightStoreTest, ConcurrentFirstGetsShareOneTensor) {
  const ModelConfig config = Small();
  auto store = MakeDummyWeightStore(config, 1, DType::kF32);
  const std::vector<std::string> names = store->Names();
  std::vector<std::vector<const std::byte*>> seen(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (const std::string& n : names) seen[t].push_back(store->Get(n)->data);
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 1; t < 4; ++t) EXPECT_EQ(seen[t], seen[0]);
}

}  // namespace
}  // namespace tandem
