#include "common/engine/cuda/cuda_weights.h"

#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/model/dtype.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

// Concatenates the named tensors (checked against their shapes) as bf16
// into one device buffer.
absl::Status Upload(const WeightStore& store, const std::vector<std::pair<std::string, std::vector<int64_t>>>& parts,
                    DeviceBuffer* dst, int64_t* total_bytes) {
  std::vector<uint16_t> host;
  for (const auto& [name, shape] : parts) {
    TANDEM_ASSIGN_OR_RETURN(HostTensor t, GetTensorChecked(store, name, shape));
    const size_t old = host.size();
    host.resize(old + static_cast<size_t>(t.numel()));
    if (t.dtype == DType::kBF16) {
      std::memcpy(host.data() + old, t.data, t.nbytes);
    } else {
      std::vector<float> f = t.ToFloat();
      for (size_t i = 0; i < f.size(); ++i) host[old + i] = FloatToBF16(f[i]);
    }
  }
  TANDEM_RETURN_IF_ERROR(dst->Allocate(host.size() * 2));
  *total_bytes += static_cast<int64_t>(host.size() * 2);
  return CudaStatus(cudaMemcpy(dst->get(), host.data(), host.size() * 2, cudaMemcpyHostToDevice), "upload weights");
}

}  // namespace

absl::Status UploadWeights(const ModelConfig& config, const WeightStore& w, CudaWeights* out) {
  const int64_t h = config.hidden_size, v = config.vocab_size, inter = config.intermediate_size;
  const int64_t qs = config.q_size(), kvs = config.kv_size();
  int64_t* bytes = &out->bytes;
  TANDEM_RETURN_IF_ERROR(Upload(w, {{"model.embed_tokens.weight", {v, h}}}, &out->embed, bytes));
  TANDEM_RETURN_IF_ERROR(Upload(w, {{"model.norm.weight", {h}}}, &out->final_norm, bytes));
  if (!config.tie_word_embeddings) {
    TANDEM_RETURN_IF_ERROR(Upload(w, {{"lm_head.weight", {v, h}}}, &out->lm_head, bytes));
  }
  out->layers.resize(static_cast<size_t>(config.num_hidden_layers));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    CudaLayerWeights& l = out->layers[static_cast<size_t>(i)];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    TANDEM_RETURN_IF_ERROR(Upload(w, {{p + "input_layernorm.weight", {h}}}, &l.attn_norm, bytes));
    TANDEM_RETURN_IF_ERROR(Upload(w,
                                  {{p + "self_attn.q_proj.weight", {qs, h}},
                                   {p + "self_attn.k_proj.weight", {kvs, h}},
                                   {p + "self_attn.v_proj.weight", {kvs, h}}},
                                  &l.wqkv, bytes));
    if (config.attention_bias) {
      TANDEM_RETURN_IF_ERROR(Upload(w,
                                    {{p + "self_attn.q_proj.bias", {qs}},
                                     {p + "self_attn.k_proj.bias", {kvs}},
                                     {p + "self_attn.v_proj.bias", {kvs}}},
                                    &l.bqkv, bytes));
    }
    TANDEM_RETURN_IF_ERROR(Upload(w, {{p + "self_attn.o_proj.weight", {h, qs}}}, &l.wo, bytes));
    TANDEM_RETURN_IF_ERROR(Upload(w, {{p + "post_attention_layernorm.weight", {h}}}, &l.ffn_norm, bytes));
    TANDEM_RETURN_IF_ERROR(
        Upload(w, {{p + "mlp.gate_proj.weight", {inter, h}}, {p + "mlp.up_proj.weight", {inter, h}}}, &l.w_gate_up,
               bytes));
    TANDEM_RETURN_IF_ERROR(Upload(w, {{p + "mlp.down_proj.weight", {h, inter}}}, &l.w_down, bytes));
    if ((i + 1) % 8 == 0 || i + 1 == config.num_hidden_layers) {
      TANDEM_LOG(INFO) << "uploaded layer " << i + 1 << "/" << config.num_hidden_layers << " ("
                       << out->bytes / (1 << 20) << " MiB)";
    }
  }
  return absl::OkStatus();
}

}  // namespace tandem
