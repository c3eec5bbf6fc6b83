#include "common/model/model_config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

using Json = nlohmann::json;

absl::Status FieldError(std::string_view source, std::string_view field, std::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat(std::string(source), ": ", std::string(field), " ", std::string(problem)));
}

// Reads an integer field; `required` fields must be present.
absl::StatusOr<int64_t> GetInt(const Json& j, std::string_view source, const char* field,
                               bool required, int64_t fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    if (required) return FieldError(source, field, "is missing");
    return fallback;
  }
  if (!it->is_number_integer()) return FieldError(source, field, "must be an integer");
  return it->get<int64_t>();
}

absl::StatusOr<double> GetDouble(const Json& j, std::string_view source, const char* field,
                                 double fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) return FieldError(source, field, "must be a number");
  return it->get<double>();
}

absl::StatusOr<DType> ParseTorchDtype(const std::string& s, std::string_view source) {
  if (s == "bfloat16") return DType::kBF16;
  if (s == "float16" || s == "half") return DType::kF16;
  if (s == "float32" || s == "float") return DType::kF32;
  return FieldError(source, "torch_dtype", absl::StrCat("'", s, "' is not supported (bfloat16, float16, float32)"));
}

std::string TorchDtypeName(DType t) {
  switch (t) {
    case DType::kBF16: return "bfloat16";
    case DType::kF16: return "float16";
    case DType::kF32: return "float32";
  }
  return "?";
}

}  // namespace

int64_t ModelConfig::NumParameters() const {
  const int64_t attn = hidden_size * q_size() * 2 + hidden_size * kv_size() * 2 +
                       (attention_bias ? q_size() + 2 * kv_size() : 0);
  const int64_t mlp = 3 * hidden_size * intermediate_size;
  const int64_t per_layer = attn + mlp + 2 * hidden_size;
  return vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * per_layer +
         hidden_size;
}

#define TANDEM_ASSIGN_FIELD(lhs, expr) \
  do {                                 \
    auto v_ = (expr);                  \
    if (!v_.ok()) return v_.status();  \
    lhs = *v_;                         \
  } while (0)

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text, std::string_view source) {
  Json j = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ": not a valid JSON object"));
  }
  ModelConfig c;
  auto arch = j.find("architectures");
  if (arch == j.end() || !arch->is_array() || arch->empty() || !(*arch)[0].is_string()) {
    return FieldError(source, "architectures", "is missing (expected e.g. [\"LlamaForCausalLM\"])");
  }
  c.architecture = (*arch)[0].get<std::string>();
  c.model_type = j.value("model_type", std::string());
  if (c.architecture == "LlamaForCausalLM" || c.architecture == "MistralForCausalLM") {
    c.attention_bias = j.value("attention_bias", false);
  } else if (c.architecture == "Qwen2ForCausalLM") {
    c.attention_bias = true;  // Qwen2 always has q/k/v biases; config.json does not say so
  } else {
    return absl::UnimplementedError(absl::StrCat(
        std::string(source), ": architecture '", c.architecture,
        "' is not supported (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)"));
  }
  if (j.value("mlp_bias", false)) return FieldError(source, "mlp_bias", "true is not supported");
  const std::string act = j.value("hidden_act", std::string("silu"));
  if (act != "silu") return FieldError(source, "hidden_act", absl::StrCat("'", act, "' is not supported (silu)"));

  TANDEM_ASSIGN_FIELD(c.vocab_size, GetInt(j, source, "vocab_size", true, 0));
  TANDEM_ASSIGN_FIELD(c.hidden_size, GetInt(j, source, "hidden_size", true, 0));
  TANDEM_ASSIGN_FIELD(c.intermediate_size, GetInt(j, source, "intermediate_size", true, 0));
  TANDEM_ASSIGN_FIELD(c.num_hidden_layers, GetInt(j, source, "num_hidden_layers", true, 0));
  TANDEM_ASSIGN_FIELD(c.num_attention_heads, GetInt(j, source, "num_attention_heads", true, 0));
  TANDEM_ASSIGN_FIELD(c.num_key_value_heads,
                      GetInt(j, source, "num_key_value_heads", false, c.num_attention_heads));
  for (auto [name, v] : {std::pair<const char*, int64_t>{"vocab_size", c.vocab_size},
                         {"hidden_size", c.hidden_size},
                         {"intermediate_size", c.intermediate_size},
                         {"num_hidden_layers", c.num_hidden_layers},
                         {"num_attention_heads", c.num_attention_heads},
                         {"num_key_value_heads", c.num_key_value_heads}}) {
    if (v <= 0) return FieldError(source, name, absl::StrCat("(", v, ") must be positive"));
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return FieldError(source, "num_attention_heads",
                      absl::StrCat("(", c.num_attention_heads, ") is not a multiple of num_key_value_heads (",
                                   c.num_key_value_heads, ")"));
  }
  const bool has_head_dim = j.contains("head_dim") && !j["head_dim"].is_null();
  if (!has_head_dim && c.hidden_size % c.num_attention_heads != 0) {
    return FieldError(source, "hidden_size",
                      absl::StrCat("(", c.hidden_size, ") is not a multiple of num_attention_heads (",
                                   c.num_attention_heads, ") and head_dim is not given"));
  }
  TANDEM_ASSIGN_FIELD(c.head_dim,
                      GetInt(j, source, "head_dim", false, c.hidden_size / c.num_attention_heads));
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) {
    return FieldError(source, "head_dim", absl::StrCat("(", c.head_dim, ") must be positive and even"));
  }
  TANDEM_ASSIGN_FIELD(c.max_position_embeddings,
                      GetInt(j, source, "max_position_embeddings", false, 2048));
  TANDEM_ASSIGN_FIELD(c.rms_norm_eps, GetDouble(j, source, "rms_norm_eps", 1e-6));
  TANDEM_ASSIGN_FIELD(c.rope_theta, GetDouble(j, source, "rope_theta", 10000.0));
  c.tie_word_embeddings = j.value("tie_word_embeddings", false);

  // Sliding-window attention changes the math once sequences pass the window.
  const bool sliding = j.value("use_sliding_window", c.architecture == "MistralForCausalLM");
  if (sliding && j.contains("sliding_window") && j["sliding_window"].is_number_integer() &&
      j["sliding_window"].get<int64_t>() < c.max_position_embeddings) {
    return absl::UnimplementedError(absl::StrCat(
        std::string(source), ": sliding_window (", j["sliding_window"].get<int64_t>(),
        ") smaller than max_position_embeddings is not supported"));
  }

  if (auto rs = j.find("rope_scaling"); rs != j.end() && !rs->is_null()) {
    if (!rs->is_object()) return FieldError(source, "rope_scaling", "must be an object");
    std::string type = rs->value("rope_type", rs->value("type", std::string()));
    if (type == "llama3") {
      c.rope_scaling.type = RopeScaling::Type::kLlama3;
      c.rope_scaling.factor = rs->value("factor", 8.0);
      c.rope_scaling.low_freq_factor = rs->value("low_freq_factor", 1.0);
      c.rope_scaling.high_freq_factor = rs->value("high_freq_factor", 4.0);
      c.rope_scaling.original_max_position_embeddings =
          rs->value("original_max_position_embeddings", int64_t{8192});
      if (c.rope_scaling.high_freq_factor <= c.rope_scaling.low_freq_factor) {
        return FieldError(source, "rope_scaling.high_freq_factor", "must exceed low_freq_factor");
      }
    } else if (type == "linear") {
      c.rope_scaling.type = RopeScaling::Type::kLinear;
      c.rope_scaling.factor = rs->value("factor", 1.0);
    } else if (type != "default" && !type.empty()) {
      return absl::UnimplementedError(absl::StrCat(std::string(source), ": rope_scaling type '", type,
                                                   "' is not supported (llama3, linear)"));
    }
    if (c.rope_scaling.factor <= 0) return FieldError(source, "rope_scaling.factor", "must be positive");
  }

  std::string dtype = j.value("torch_dtype", j.value("dtype", std::string("bfloat16")));
  TANDEM_ASSIGN_FIELD(c.torch_dtype, ParseTorchDtype(dtype, source));
  TANDEM_ASSIGN_FIELD(c.bos_token_id, GetInt(j, source, "bos_token_id", false, -1));
  if (auto eos = j.find("eos_token_id"); eos != j.end() && !eos->is_null()) {
    if (eos->is_number_integer()) {
      c.eos_token_ids.push_back(eos->get<int64_t>());
    } else if (eos->is_array()) {
      for (const Json& e : *eos) {
        if (!e.is_number_integer()) return FieldError(source, "eos_token_id", "must hold integers");
        c.eos_token_ids.push_back(e.get<int64_t>());
      }
    } else {
      return FieldError(source, "eos_token_id", "must be an integer or a list of integers");
    }
  }
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseModelConfig(ss.str(), path);
}

std::string ModelConfigToJson(const ModelConfig& c) {
  Json j;
  j["architectures"] = {c.architecture};
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["hidden_act"] = "silu";
  if (c.architecture != "Qwen2ForCausalLM") j["attention_bias"] = c.attention_bias;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["torch_dtype"] = TorchDtypeName(c.torch_dtype);
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else if (!c.eos_token_ids.empty()) {
    j["eos_token_id"] = c.eos_token_ids;
  }
  switch (c.rope_scaling.type) {
    case RopeScaling::Type::kNone:
      j["rope_scaling"] = nullptr;
      break;
    case RopeScaling::Type::kLinear:
      j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_scaling.factor}};
      break;
    case RopeScaling::Type::kLlama3:
      j["rope_scaling"] = {{"rope_type", "llama3"},
                           {"factor", c.rope_scaling.factor},
                           {"low_freq_factor", c.rope_scaling.low_freq_factor},
                           {"high_freq_factor", c.rope_scaling.high_freq_factor},
                           {"original_max_position_embeddings",
                            c.rope_scaling.original_max_position_embeddings}};
      break;
  }
  return j.dump(2) + "\n";
}

}  // namespace tandem
