// config.json of the supported families, and errors that name the field.
#include "common/model/model_config.h"

#include "gtest/gtest.h"

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

TEST(ModelConfigTest, RoundTripsThroughJson) {
  for (const char* text : {kLlama31_8B, kLlama32_1B, kLlama2_7B, kMistral7B, kQwen25_05B}) {
    ModelConfig c = Parse(text);
    ModelConfig again = Parse(ModelConfigToJson(c).c_str());
    EXPECT_EQ(ModelConfigToJson(again), ModelConfigToJson(c));
    EXPECT_EQ(again.NumParameters(), c.NumParameters());
  }
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

}  // namespace
}  // namespace tandem
