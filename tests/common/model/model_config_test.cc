// config.json of the supported families, and errors that name the field.
#include "common/model/model_config.h"

#include <fstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/temp_dir.h"

namespace tandem {
namespace {

constexpr char kLlama31_8B[] = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 4096,
  "intermediate_size": 14336, "max_position_embeddings": 131072, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "vocab_size": 128256})";

constexpr char kLlama32_1B[] = R"({
  "architectures": ["LlamaForCausalLM"], "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64,
  "hidden_size": 2048, "intermediate_size": 8192, "max_position_embeddings": 131072, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "vocab_size": 128256})";

constexpr char kLlama2_7B[] = R"({
  "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
  "hidden_size": 4096, "intermediate_size": 11008, "max_position_embeddings": 4096, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "rms_norm_eps": 1e-05,
  "rope_scaling": null, "tie_word_embeddings": false, "torch_dtype": "float16", "vocab_size": 32000})";

constexpr char kMistral7B[] = R"({
  "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
  "hidden_size": 4096, "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
  "rope_theta": 1000000.0, "sliding_window": null, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "vocab_size": 32768})";

constexpr char kQwen25_05B[] = R"({
  "architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu",
  "hidden_size": 896, "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21,
  "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "use_sliding_window": false, "vocab_size": 151936})";

ModelConfig Parse(const char* text) {
  auto c = ParseModelConfig(text, "config.json");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : ModelConfig();
}

TEST(ModelConfigTest, Llama31WithLlama3RopeScaling) {
  ModelConfig c = Parse(kLlama31_8B);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c.NumParameters(), 8030261248);  // Llama 3.1 8B
}

TEST(ModelConfigTest, Llama32TiedEmbeddingsAndExplicitHeadDim) {
  ModelConfig c = Parse(kLlama32_1B);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_EQ(c.NumParameters(), 1235814400);  // Llama 3.2 1B
}

TEST(ModelConfigTest, Llama2MistralAndQwen2) {
  ModelConfig l2 = Parse(kLlama2_7B);
  EXPECT_EQ(l2.rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_EQ(l2.torch_dtype, DType::kF16);
  EXPECT_EQ(l2.NumParameters(), 6738415616);  // Llama 2 7B
  ModelConfig m = Parse(kMistral7B);
  EXPECT_EQ(m.architecture, "MistralForCausalLM");
  EXPECT_FALSE(m.attention_bias);
  ModelConfig q = Parse(kQwen25_05B);
  EXPECT_TRUE(q.attention_bias);  // implied by the architecture
  EXPECT_TRUE(q.tie_word_embeddings);
  EXPECT_EQ(q.head_dim, 64);
  EXPECT_EQ(q.NumParameters(), 494032768);  // Qwen2.5 0.5B
}

TEST(ModelConfigTest, Llama2DefaultsHeadDimAndKvHeads) {
  // Llama 2 checkpoints written by older transformers lack num_key_value_heads.
  nlohmann::json j = nlohmann::json::parse(kLlama2_7B);
  j.erase("num_key_value_heads");
  auto c = ParseModelConfig(j.dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_key_value_heads, 32);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{2}));
  EXPECT_FALSE(c->attention_bias);
}

TEST(ModelConfigTest, Qwen2SlidingWindowSwitchedOffIsAccepted) {
  ModelConfig q = Parse(kQwen25_05B);
  EXPECT_EQ(q.architecture, "Qwen2ForCausalLM");
  EXPECT_EQ(q.model_type, "qwen2");
  EXPECT_EQ(q.num_key_value_heads, 2);
  EXPECT_EQ(q.rms_norm_eps, 1e-6);
  EXPECT_EQ(q.rope_theta, 1000000.0);
  // ... but switched on with a window shorter than the context it is not.
  nlohmann::json j = nlohmann::json::parse(kQwen25_05B);
  j["use_sliding_window"] = true;
  j["sliding_window"] = 4096;
  auto c = ParseModelConfig(j.dump(), "qwen/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(c.status().message().find("sliding_window (4096)"), std::string::npos) << c.status();
  EXPECT_NE(c.status().message().find("qwen/config.json"), std::string::npos) << c.status();
}

TEST(ModelConfigTest, MistralWindowAsLongAsTheContextIsPlainAttention) {
  nlohmann::json j = nlohmann::json::parse(kMistral7B);
  j["sliding_window"] = 32768;
  auto c = ParseModelConfig(j.dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->max_position_embeddings, 32768);
}

TEST(ModelConfigTest, LinearRopeScalingInBothSpellings) {
  for (const char* key : {"rope_type", "type"}) {
    nlohmann::json j = nlohmann::json::parse(kLlama2_7B);
    j["rope_scaling"] = {{key, "linear"}, {"factor", 4.0}};
    auto c = ParseModelConfig(j.dump(), "config.json");
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLinear) << key;
    EXPECT_EQ(c->rope_scaling.factor, 4.0);
  }
  nlohmann::json j = nlohmann::json::parse(kLlama31_8B);
  j["rope_scaling"].erase("rope_type");
  j["rope_scaling"]["type"] = "llama3";
  auto c = ParseModelConfig(j.dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
}

// transformers 5 writes "dtype" and folds rope_theta and rope_scaling into
// rope_parameters.
TEST(ModelConfigTest, Transformers5Spelling) {
  nlohmann::json j = nlohmann::json::parse(kLlama31_8B);
  j.erase("torch_dtype");
  j.erase("rope_theta");
  j["dtype"] = "float16";
  j["rope_parameters"] = j["rope_scaling"];
  j["rope_parameters"]["rope_theta"] = 500000.0;
  j.erase("rope_scaling");
  auto c = ParseModelConfig(j.dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->torch_dtype, DType::kF16);
  EXPECT_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(c->rope_scaling.factor, 8.0);

  nlohmann::json plain = nlohmann::json::parse(kLlama2_7B);
  plain.erase("rope_scaling");
  plain["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 20000.0}};
  auto p = ParseModelConfig(plain.dump(), "config.json");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_EQ(p->rope_theta, 20000.0);
}

TEST(ModelConfigTest, RoundTripsThroughJson) {
  nlohmann::json linear = nlohmann::json::parse(kLlama2_7B);
  linear["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  linear["rms_norm_eps"] = 1.2345e-6;
  const std::string linear_text = linear.dump();
  for (const char* text : {kLlama31_8B, kLlama32_1B, kLlama2_7B, kMistral7B, kQwen25_05B, linear_text.c_str()}) {
    ModelConfig c = Parse(text);
    auto again = ParseModelConfig(ModelConfigToJson(c), "written.json");
    ASSERT_TRUE(again.ok()) << again.status() << "\n" << ModelConfigToJson(c);
    EXPECT_TRUE(*again == c) << ModelConfigToJson(c);
    EXPECT_EQ(again->NumParameters(), c.NumParameters());
  }
  // The written file is what transformers reads: the fields it needs by
  // their transformers names.
  const nlohmann::json written = nlohmann::json::parse(ModelConfigToJson(Parse(kLlama31_8B)));
  EXPECT_EQ(written["architectures"], nlohmann::json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(written["torch_dtype"], "bfloat16");
  EXPECT_EQ(written["rope_scaling"]["rope_type"], "llama3");
  EXPECT_EQ(written["eos_token_id"], nlohmann::json::array({128001, 128008, 128009}));
  EXPECT_FALSE(nlohmann::json::parse(ModelConfigToJson(Parse(kQwen25_05B))).contains("attention_bias"));
}

TEST(ModelConfigTest, LoadsFromAFile) {
  testing::TempDir dir;
  const std::string path = (dir.path() / "config.json").string();
  std::ofstream(path) << kLlama32_1B;
  auto c = LoadModelConfig(path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_hidden_layers, 16);
  auto missing = LoadModelConfig((dir.path() / "nope.json").string());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope.json"), std::string::npos) << missing.status();
  std::ofstream(path) << R"({"architectures": ["LlamaForCausalLM"]})";
  auto bad = LoadModelConfig(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(path), std::string::npos) << bad.status();
}

void ExpectError(const std::string& text, absl::StatusCode code, const std::string& needle) {
  auto c = ParseModelConfig(text, "/models/x/config.json");
  ASSERT_FALSE(c.ok()) << text;
  EXPECT_EQ(c.status().code(), code) << c.status();
  EXPECT_NE(c.status().message().find(needle), std::string::npos) << c.status();
  EXPECT_NE(c.status().message().find("/models/x/config.json"), std::string::npos) << c.status();
}

TEST(ModelConfigTest, ErrorsNameTheFileAndTheField) {
  ExpectError("{not json", absl::StatusCode::kInvalidArgument, "not a valid JSON");
  ExpectError("[1, 2]", absl::StatusCode::kInvalidArgument, "not a valid JSON object");
  ExpectError(R"({"architectures": []})", absl::StatusCode::kInvalidArgument, "architectures is missing");
  ExpectError(R"({"architectures": ["Qwen3ForCausalLM"], "hidden_size": 8})", absl::StatusCode::kUnimplemented,
              "Qwen3ForCausalLM");
  ExpectError(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
                  "num_hidden_layers": 2, "num_attention_heads": 4})",
              absl::StatusCode::kInvalidArgument, "vocab_size is missing");
  ExpectError(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 64,
                  "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 12,
                  "num_key_value_heads": 5})",
              absl::StatusCode::kInvalidArgument, "num_attention_heads (12) is not a multiple of num_key_value_heads (5)");
  ExpectError(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 64,
                  "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "hidden_act": "gelu"})",
              absl::StatusCode::kInvalidArgument, "hidden_act");
  ExpectError(R"({"architectures": ["MistralForCausalLM"], "vocab_size": 10, "hidden_size": 64,
                  "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "max_position_embeddings": 32768, "sliding_window": 4096})",
              absl::StatusCode::kUnimplemented, "sliding_window");
  ExpectError(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 64,
                  "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "rope_scaling": {"rope_type": "yarn", "factor": 4}})",
              absl::StatusCode::kUnimplemented, "yarn");
}


TEST(ModelConfigTest, EachMissingRequiredFieldIsNamed) {
  for (const char* field : {"architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "vocab_size"}) {
    nlohmann::json j = nlohmann::json::parse(kLlama31_8B);
    j.erase(field);
    ExpectError(j.dump(), absl::StatusCode::kInvalidArgument, std::string(field) + " is missing");
  }
}

// Wrong JSON types are errors naming the field, never exceptions.
TEST(ModelConfigTest, WrongTypesNameTheField) {
  struct Case {
    const char* field;
    nlohmann::json value;
    const char* needle;
  } cases[] = {
      {"hidden_size", "4096", "hidden_size must be an integer"},
      {"num_key_value_heads", 2.5, "num_key_value_heads must be an integer"},
      {"tie_word_embeddings", "yes", "tie_word_embeddings must be true or false"},
      {"torch_dtype", "int8", "torch_dtype 'int8' is not supported"},
      {"torch_dtype", 16, "torch_dtype must be a string"},
      {"rms_norm_eps", "small", "rms_norm_eps must be a number"},
      {"model_type", 3, "model_type must be a string"},
      {"eos_token_id", "</s>", "eos_token_id must be an integer or a list"},
      {"eos_token_id", nlohmann::json::array({1, "x"}), "eos_token_id must hold integers"},
      {"rope_scaling", nlohmann::json{{"rope_type", "llama3"}, {"factor", "8"}}, "rope_scaling.factor must be a number"},
      {"rope_scaling", nlohmann::json{{"rope_type", "llama3"}, {"low_freq_factor", 4.0}, {"high_freq_factor", 1.0}},
       "rope_scaling.high_freq_factor"},
      {"rope_scaling", nlohmann::json{{"rope_type", "linear"}, {"factor", -1.0}}, "rope_scaling.factor"},
      {"rope_scaling", "llama3", "rope_scaling must be an object"},
      {"head_dim", 63, "head_dim (63) must be positive and even"},
      {"num_hidden_layers", 0, "num_hidden_layers (0) must be positive"},
      {"mlp_bias", true, "mlp_bias"},
  };
  for (const Case& c : cases) {
    nlohmann::json j = nlohmann::json::parse(kLlama31_8B);
    j[c.field] = c.value;
    ExpectError(j.dump(), absl::StatusCode::kInvalidArgument, c.needle);
  }
}

TEST(ModelConfigTest, HiddenSizeMustSplitIntoHeadsUnlessHeadDimIsGiven) {
  nlohmann::json j = nlohmann::json::parse(kLlama2_7B);
  j["num_attention_heads"] = 30;
  j["num_key_value_heads"] = 30;
  ExpectError(j.dump(), absl::StatusCode::kInvalidArgument,
              "hidden_size (4096) is not a multiple of num_attention_heads (30)");
  j["head_dim"] = 128;  // as Mistral Nemo does: q_size != hidden_size
  auto c = ParseModelConfig(j.dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->q_size(), 3840);
}

}  // namespace
}  // namespace tandem
