#include "common/model/model_config.h"

#include "absl/strings/str_cat.h"
#include "common/util/read_file.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

using Json = nlohmann::json;

absl::Status FieldError(const std::string& source, const std::string& field, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", field, " ", problem));
}

// Typed readers of one member of `obj`. `label` is the field as the error
// names it ("rope_scaling.factor"). A null member counts as absent, as
// transformers writes null for unset optional fields. None of them throws:
// a wrong type is an error naming the field.
absl::StatusOr<int64_t> GetInt(const Json& obj, const std::string& source, const char* key,
                               const std::string& label, bool required, int64_t fallback) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (required) return FieldError(source, label, "is missing");
    return fallback;
  }
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    return FieldError(source, label, "is out of range");
  }
  if (!it->is_number_integer()) return FieldError(source, label, "must be an integer");
  return it->get<int64_t>();
}

absl::StatusOr<double> GetDouble(const Json& obj, const std::string& source, const char* key,
                                 const std::string& label, double fallback) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_number()) return FieldError(source, label, "must be a number");
  return it->get<double>();
}

absl::StatusOr<bool> GetBool(const Json& obj, const std::string& source, const char* key,
                             const std::string& label, bool fallback) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return FieldError(source, label, "must be true or false");
  return it->get<bool>();
}

absl::StatusOr<std::string> GetString(const Json& obj, const std::string& source, const char* key,
                                      const std::string& label, std::string fallback) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_string()) return FieldError(source, label, "must be a string");
  return it->get<std::string>();
}

absl::StatusOr<DType> ParseTorchDtype(const std::string& s, const std::string& source,
                                      const std::string& field) {
  if (s == "bfloat16") return DType::kBF16;
  if (s == "float16" || s == "half") return DType::kF16;
  if (s == "float32" || s == "float") return DType::kF32;
  return FieldError(source, field,
                    absl::StrCat("'", s, "' is not supported (bfloat16, float16, float32)"));
}

std::string TorchDtypeName(DType t) {
  switch (t) {
    case DType::kBF16: return "bfloat16";
    case DType::kF16: return "float16";
    case DType::kF32: return "float32";
  }
  return "?";
}

// Reads rope_scaling (transformers 4) or rope_parameters (transformers 5,
// which also carries rope_theta and says "default" for plain RoPE).
absl::Status ParseRopeScaling(const Json& rs, const std::string& source, const std::string& field,
                              RopeScaling* out) {
  if (!rs.is_object()) return FieldError(source, field, "must be an object");
  TANDEM_ASSIGN_OR_RETURN(std::string legacy_type,
                          GetString(rs, source, "type", field + ".type", ""));
  TANDEM_ASSIGN_OR_RETURN(std::string type,
                          GetString(rs, source, "rope_type", field + ".rope_type", legacy_type));
  if (type == "llama3") {
    out->type = RopeScaling::Type::kLlama3;
    TANDEM_ASSIGN_OR_RETURN(out->factor, GetDouble(rs, source, "factor", field + ".factor", 8.0));
    TANDEM_ASSIGN_OR_RETURN(out->low_freq_factor,
                            GetDouble(rs, source, "low_freq_factor", field + ".low_freq_factor", 1.0));
    TANDEM_ASSIGN_OR_RETURN(out->high_freq_factor,
                            GetDouble(rs, source, "high_freq_factor", field + ".high_freq_factor", 4.0));
    TANDEM_ASSIGN_OR_RETURN(
        out->original_max_position_embeddings,
        GetInt(rs, source, "original_max_position_embeddings",
               field + ".original_max_position_embeddings", false, 8192));
    if (out->high_freq_factor <= out->low_freq_factor) {
      return FieldError(source, field + ".high_freq_factor",
                        absl::StrCat("(", out->high_freq_factor, ") must exceed low_freq_factor (",
                                     out->low_freq_factor, ")"));
    }
    if (out->original_max_position_embeddings <= 0) {
      return FieldError(source, field + ".original_max_position_embeddings", "must be positive");
    }
  } else if (type == "linear") {
    out->type = RopeScaling::Type::kLinear;
    TANDEM_ASSIGN_OR_RETURN(out->factor, GetDouble(rs, source, "factor", field + ".factor", 1.0));
  } else if (type == "default" || type.empty()) {
    *out = RopeScaling();
  } else {
    return absl::UnimplementedError(absl::StrCat(source, ": ", field, " type '", type,
                                                 "' is not supported (llama3, linear)"));
  }
  if (out->factor <= 0) {
    return FieldError(source, field + ".factor", absl::StrCat("(", out->factor, ") must be positive"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseParsedConfig(const Json& j, const std::string& source) {
  ModelConfig c;
  auto arch = j.find("architectures");
  if (arch == j.end() || !arch->is_array() || arch->empty() || !(*arch)[0].is_string()) {
    return FieldError(source, "architectures", "is missing (expected e.g. [\"LlamaForCausalLM\"])");
  }
  c.architecture = (*arch)[0].get<std::string>();
  TANDEM_ASSIGN_OR_RETURN(c.model_type, GetString(j, source, "model_type", "model_type", ""));
  if (c.architecture == "LlamaForCausalLM" || c.architecture == "MistralForCausalLM") {
    TANDEM_ASSIGN_OR_RETURN(c.attention_bias,
                            GetBool(j, source, "attention_bias", "attention_bias", false));
  } else if (c.architecture == "Qwen2ForCausalLM") {
    // Qwen2 always has q/k/v biases; its config.json does not say so.
    c.attention_bias = true;
  } else {
    return absl::UnimplementedError(
        absl::StrCat(source, ": architectures: '", c.architecture,
                     "' is not supported (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)"));
  }
  TANDEM_ASSIGN_OR_RETURN(bool mlp_bias, GetBool(j, source, "mlp_bias", "mlp_bias", false));
  if (mlp_bias) return FieldError(source, "mlp_bias", "true is not supported");
  TANDEM_ASSIGN_OR_RETURN(std::string act, GetString(j, source, "hidden_act", "hidden_act", "silu"));
  if (act != "silu") {
    return FieldError(source, "hidden_act", absl::StrCat("'", act, "' is not supported (silu)"));
  }

  struct RequiredInt {
    const char* name;
    int64_t* dst;
  };
  for (const RequiredInt& f : {RequiredInt{"vocab_size", &c.vocab_size},
                               RequiredInt{"hidden_size", &c.hidden_size},
                               RequiredInt{"intermediate_size", &c.intermediate_size},
                               RequiredInt{"num_hidden_layers", &c.num_hidden_layers},
                               RequiredInt{"num_attention_heads", &c.num_attention_heads}}) {
    TANDEM_ASSIGN_OR_RETURN(*f.dst, GetInt(j, source, f.name, f.name, true, 0));
    if (*f.dst <= 0) return FieldError(source, f.name, absl::StrCat("(", *f.dst, ") must be positive"));
  }
  TANDEM_ASSIGN_OR_RETURN(c.num_key_value_heads,
                          GetInt(j, source, "num_key_value_heads", "num_key_value_heads", false,
                                 c.num_attention_heads));
  if (c.num_key_value_heads <= 0) {
    return FieldError(source, "num_key_value_heads",
                      absl::StrCat("(", c.num_key_value_heads, ") must be positive"));
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
  TANDEM_ASSIGN_OR_RETURN(c.head_dim, GetInt(j, source, "head_dim", "head_dim", false,
                                             c.hidden_size / c.num_attention_heads));
  // RoPE rotates pairs of dimensions.
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) {
    return FieldError(source, "head_dim", absl::StrCat("(", c.head_dim, ") must be positive and even"));
  }
  TANDEM_ASSIGN_OR_RETURN(c.max_position_embeddings,
                          GetInt(j, source, "max_position_embeddings", "max_position_embeddings",
                                 false, 2048));
  if (c.max_position_embeddings <= 0) {
    return FieldError(source, "max_position_embeddings",
                      absl::StrCat("(", c.max_position_embeddings, ") must be positive"));
  }
  TANDEM_ASSIGN_OR_RETURN(c.rms_norm_eps, GetDouble(j, source, "rms_norm_eps", "rms_norm_eps", 1e-6));
  if (c.rms_norm_eps <= 0) return FieldError(source, "rms_norm_eps", "must be positive");
  TANDEM_ASSIGN_OR_RETURN(c.tie_word_embeddings,
                          GetBool(j, source, "tie_word_embeddings", "tie_word_embeddings", false));

  // Sliding-window attention changes the math once a sequence passes the
  // window; a window as long as the context is plain causal attention.
  // Mistral has no use_sliding_window switch (a set window is in force);
  // Qwen2 writes a window but switches it off with use_sliding_window.
  TANDEM_ASSIGN_OR_RETURN(bool sliding,
                          GetBool(j, source, "use_sliding_window", "use_sliding_window",
                                  c.architecture == "MistralForCausalLM"));
  TANDEM_ASSIGN_OR_RETURN(int64_t window,
                          GetInt(j, source, "sliding_window", "sliding_window", false, -1));
  if (sliding && window >= 0 && window < c.max_position_embeddings) {
    return absl::UnimplementedError(absl::StrCat(
        source, ": sliding_window (", window, ") smaller than max_position_embeddings (",
        c.max_position_embeddings, ") is not supported: sliding-window attention is not implemented"));
  }

  const Json* rope_params = nullptr;
  if (auto rp = j.find("rope_parameters"); rp != j.end() && !rp->is_null()) rope_params = &*rp;
  double theta_fallback = 10000.0;
  if (rope_params != nullptr && rope_params->is_object()) {
    TANDEM_ASSIGN_OR_RETURN(theta_fallback, GetDouble(*rope_params, source, "rope_theta",
                                                      "rope_parameters.rope_theta", 10000.0));
  }
  TANDEM_ASSIGN_OR_RETURN(c.rope_theta, GetDouble(j, source, "rope_theta", "rope_theta", theta_fallback));
  if (c.rope_theta <= 0) return FieldError(source, "rope_theta", "must be positive");
  if (auto rs = j.find("rope_scaling"); rs != j.end() && !rs->is_null()) {
    TANDEM_RETURN_IF_ERROR(ParseRopeScaling(*rs, source, "rope_scaling", &c.rope_scaling));
  } else if (rope_params != nullptr) {
    TANDEM_RETURN_IF_ERROR(ParseRopeScaling(*rope_params, source, "rope_parameters", &c.rope_scaling));
  }

  // transformers 5 writes "dtype"; older versions "torch_dtype".
  const char* dtype_field = j.contains("torch_dtype") && !j["torch_dtype"].is_null() ? "torch_dtype" : "dtype";
  TANDEM_ASSIGN_OR_RETURN(std::string dtype, GetString(j, source, dtype_field, dtype_field, "bfloat16"));
  TANDEM_ASSIGN_OR_RETURN(c.torch_dtype, ParseTorchDtype(dtype, source, dtype_field));

  TANDEM_ASSIGN_OR_RETURN(c.bos_token_id, GetInt(j, source, "bos_token_id", "bos_token_id", false, -1));
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

}  // namespace

int64_t ModelConfig::NumParameters() const {
  const int64_t attn = hidden_size * q_size() * 2 + hidden_size * kv_size() * 2 +
                       (attention_bias ? q_size() + 2 * kv_size() : 0);
  const int64_t mlp = 3 * hidden_size * intermediate_size;
  const int64_t per_layer = attn + mlp + 2 * hidden_size;
  return vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * per_layer +
         hidden_size;
}

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text, std::string_view source) {
  Json j = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ": not a valid JSON object"));
  }
  return ParseParsedConfig(j, std::string(source));
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  TANDEM_ASSIGN_OR_RETURN(const std::string text, ReadWholeFile(path));
  return ParseModelConfig(text, path);
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
  // Qwen2 has no attention_bias field: the architecture implies the biases.
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
