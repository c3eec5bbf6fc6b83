// The tensors a config needs, checkpoint validation, and dummy weights.
#include "common/model/weight_store.h"

#include <set>

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
  EXPECT_FALSE(ValidateWeights(**store, wider).ok());
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

}  // namespace
}  // namespace tandem
