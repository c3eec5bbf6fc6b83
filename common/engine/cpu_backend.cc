#include "common/engine/cpu_backend.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/engine/cpu_attention.h"
#include "common/engine/cpu_kernels.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

// Appends tensor `name` (checked to be `shape`) as fp32 to `dst`; clears
// *all_bf16 unless the tensor is stored as bf16.
absl::Status AppendWeight(const WeightStore& store, const std::string& name,
                          const std::vector<int64_t>& shape, std::vector<float>* dst, bool* all_bf16) {
  TANDEM_ASSIGN_OR_RETURN(HostTensor t, GetTensorChecked(store, name, shape));
  const size_t old = dst->size();
  dst->resize(old + static_cast<size_t>(t.numel()));
  t.ToFloat(dst->data() + old);
  if (t.dtype != DType::kBF16) *all_bf16 = false;
  return absl::OkStatus();
}

void RoundAll(std::vector<float>& v) { RoundToBf16(v.data(), static_cast<int64_t>(v.size())); }

}  // namespace

CpuBackend::CpuBackend(const ModelConfig& config, const CpuBackendOptions& options)
    : config_(config),
      kv_(KvLayoutFor(config, options.block_size, DType::kF32), options.num_kv_blocks),
      pool_(options.num_threads),
      rope_inv_freq_(RopeInverseFrequencies(config)) {
  // The fp32 table a bf16 model (and the CUDA backend) computes angles from.
  for (double f : rope_inv_freq_) rope_inv_freq_f32_.push_back(static_cast<float>(f));
}

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(const ModelConfig& config,
                                                               const WeightStore& weights,
                                                               const CpuBackendOptions& options) {
  if (options.block_size <= 0 || options.num_kv_blocks <= 0 || options.num_threads <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CPU backend: block_size (", options.block_size, "), num_kv_blocks (",
        options.num_kv_blocks, ") and num_threads (", options.num_threads, ") must be positive"));
  }
  if (config.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_dim (", config.head_dim, ") must be even for rotary embeddings"));
  }
  std::unique_ptr<CpuBackend> b(new CpuBackend(config, options));
  const int64_t h = config.hidden_size, v = config.vocab_size, inter = config.intermediate_size;
  const int64_t qs = config.q_size(), kvs = config.kv_size();
  bool all_bf16 = true;
  TANDEM_RETURN_IF_ERROR(AppendWeight(weights, "model.embed_tokens.weight", {v, h}, &b->embed_, &all_bf16));
  TANDEM_RETURN_IF_ERROR(AppendWeight(weights, "model.norm.weight", {h}, &b->final_norm_, &all_bf16));
  if (!config.tie_word_embeddings) {
    TANDEM_RETURN_IF_ERROR(AppendWeight(weights, "lm_head.weight", {v, h}, &b->lm_head_, &all_bf16));
  }
  b->layers_.resize(static_cast<size_t>(config.num_hidden_layers));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    Layer& l = b->layers_[static_cast<size_t>(i)];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    TANDEM_RETURN_IF_ERROR(AppendWeight(weights, p + "input_layernorm.weight", {h}, &l.attn_norm, &all_bf16));
    TANDEM_RETURN_IF_ERROR(AppendWeight(weights, p + "self_attn.q_proj.weight", {qs, h}, &l.wqkv, &all_bf16));
    TANDEM_RETURN_IF_ERROR(AppendWeight(weights, p + "self_attn.k_proj.weight", {kvs, h}, &l.wqkv, &all_bf16));
    TANDEM_RETURN_IF_ERROR(AppendWeight(weights, p + "self_attn.v_proj.weight", {kvs, h}, &l.wqkv, &all_bf16));
    if (config.attention_bias) {
      TANDEM_RETURN_IF_ERROR(AppendWeight(weights, p + "self_attn.q_proj.bias", {qs}, &l.bqkv, &all_bf16));
      TANDEM_RETURN_IF_ERROR(AppendWeight(weights, p + "self_attn.k_proj.bias", {kvs}, &l.bqkv, &all_bf16));
      TANDEM_RETURN_IF_ERROR(AppendWeight(weights, p + "self_attn.v_proj.bias", {kvs}, &l.bqkv, &all_bf16));
    }
    TANDEM_RETURN_IF_ERROR(AppendWeight(weights, p + "self_attn.o_proj.weight", {h, qs}, &l.wo, &all_bf16));
    TANDEM_RETURN_IF_ERROR(
        AppendWeight(weights, p + "post_attention_layernorm.weight", {h}, &l.ffn_norm, &all_bf16));
    TANDEM_RETURN_IF_ERROR(AppendWeight(weights, p + "mlp.gate_proj.weight", {inter, h}, &l.w_gate_up, &all_bf16));
    TANDEM_RETURN_IF_ERROR(AppendWeight(weights, p + "mlp.up_proj.weight", {inter, h}, &l.w_gate_up, &all_bf16));
    TANDEM_RETURN_IF_ERROR(AppendWeight(weights, p + "mlp.down_proj.weight", {h, inter}, &l.w_down, &all_bf16));
  }
  b->bf16_ = options.bf16_activations.value_or(all_bf16);
  if (b->bf16_ && !all_bf16) {
    // Run as the checkpoint loaded into a bf16 model: weights rounded too.
    for (std::vector<float>* v : {&b->embed_, &b->final_norm_, &b->lm_head_}) RoundAll(*v);
    for (Layer& l : b->layers_) {
      for (std::vector<float>* v : {&l.attn_norm, &l.wqkv, &l.bqkv, &l.wo, &l.ffn_norm, &l.w_gate_up, &l.w_down}) {
        RoundAll(*v);
      }
    }
  }
  return b;
}

absl::Status CpuBackend::ValidateBatch(const ForwardBatch& batch) const {
  const int32_t bs = kv_.layout().block_size;
  for (size_t i = 0; i < batch.seqs.size(); ++i) {
    const SequenceChunk& c = batch.seqs[i];
    if (c.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("batch sequence ", i, " has no new tokens"));
    }
    for (int32_t t : c.tokens) {
      if (t < 0 || t >= config_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("token id ", t, " in batch sequence ", i,
                                                       " is outside the vocabulary [0, ",
                                                       config_.vocab_size, ")"));
      }
    }
    const int64_t needed = c.num_cached + static_cast<int64_t>(c.tokens.size());
    if (c.num_cached < 0 || static_cast<int64_t>(c.block_table.size()) * bs < needed) {
      return absl::InvalidArgumentError(absl::StrCat(
          "batch sequence ", i, ": block table of ", c.block_table.size(), " blocks cannot hold ",
          needed, " positions"));
    }
    for (int32_t b : c.block_table) {
      if (b < 0 || b >= kv_.num_blocks()) {
        return absl::InvalidArgumentError(
            absl::StrCat("batch sequence ", i, ": block ", b, " is outside the KV pool"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Forward(const ForwardBatch& batch, ForwardOutput* out) {
  TANDEM_RETURN_IF_ERROR(ValidateBatch(batch));
  const int64_t hidden = config_.hidden_size, inter = config_.intermediate_size;
  const int64_t qs = config_.q_size(), kvs = config_.kv_size(), qkv = qs + 2 * kvs;
  const int64_t head_dim = config_.head_dim;
  const float eps = static_cast<float>(config_.rms_norm_eps);
  // bf16 mode: every value below that a bf16 model holds as bf16 is rounded
  // where it is produced (the embedding rows are bf16 values already).
  const bool bf16 = bf16_;

  // Flatten every sequence's new tokens into rows of one activation matrix.
  std::vector<AttentionSeq> attn;
  std::vector<int64_t> positions;
  int64_t rows = 0;
  for (const SequenceChunk& c : batch.seqs) {
    attn.push_back({rows, static_cast<int64_t>(c.tokens.size()), c.num_cached, c.block_table});
    for (size_t t = 0; t < c.tokens.size(); ++t) positions.push_back(c.num_cached + t);
    rows += static_cast<int64_t>(c.tokens.size());
  }
  std::vector<float> x(rows * hidden), normed(rows * hidden), proj(rows * std::max(qkv, 2 * inter));
  std::vector<float> q(rows * qs), attn_out(rows * qs), act(rows * inter), delta(rows * hidden);
  {
    int64_t r = 0;
    for (const SequenceChunk& c : batch.seqs) {
      for (int32_t t : c.tokens) {
        std::copy_n(embed_.data() + int64_t{t} * hidden, hidden, x.data() + r * hidden);
        ++r;
      }
    }
  }

  const KvLayout& layout = kv_.layout();
  const int64_t bs = layout.block_size;
  for (int layer = 0; layer < static_cast<int>(layers_.size()); ++layer) {
    const Layer& w = layers_[static_cast<size_t>(layer)];
    RmsNorm(x.data(), w.attn_norm.data(), rows, hidden, eps, normed.data(), bf16);
    MatMulTransposed(pool_, normed.data(), rows, hidden, w.wqkv.data(), qkv,
                     w.bqkv.empty() ? nullptr : w.bqkv.data(), proj.data(), bf16);
    // RoPE on q and k, then k and v go into the token's slot of its block.
    for (size_t s = 0; s < batch.seqs.size(); ++s) {
      const SequenceChunk& c = batch.seqs[s];
      for (int64_t t = 0; t < attn[s].num_new; ++t) {
        const int64_t r = attn[s].row_begin + t, pos = positions[r];
        float* row = proj.data() + r * qkv;
        // k heads follow q heads in the row.
        for (int64_t h = 0; h < config_.num_attention_heads + config_.num_key_value_heads; ++h) {
          if (bf16) {
            ApplyRopeBf16(row + h * head_dim, head_dim, pos, rope_inv_freq_f32_);
          } else {
            ApplyRope(row + h * head_dim, head_dim, pos, rope_inv_freq_);
          }
        }
        const int32_t block = c.block_table[pos / bs];
        const int64_t slot = (pos % bs) * kvs;
        std::copy_n(row + qs, kvs, kv_.Key(layer, block) + slot);
        std::copy_n(row + qs + kvs, kvs, kv_.Value(layer, block) + slot);
        std::copy_n(row, qs, q.data() + r * qs);
      }
    }
    PagedAttention(pool_, kv_, layer, attn, config_.num_attention_heads, q.data(), attn_out.data(),
                   bf16);
    MatMulTransposed(pool_, attn_out.data(), rows, qs, w.wo.data(), hidden, nullptr, delta.data(),
                     bf16);
    AddResidual(x.data(), delta.data(), rows * hidden, bf16);

    RmsNorm(x.data(), w.ffn_norm.data(), rows, hidden, eps, normed.data(), bf16);
    MatMulTransposed(pool_, normed.data(), rows, hidden, w.w_gate_up.data(), 2 * inter, nullptr,
                     proj.data(), bf16);
    SiluMul(proj.data(), rows, inter, act.data(), bf16);
    MatMulTransposed(pool_, act.data(), rows, inter, w.w_down.data(), hidden, nullptr, delta.data(),
                     bf16);
    AddResidual(x.data(), delta.data(), rows * hidden, bf16);
    if (batch.on_layer_done) batch.on_layer_done(layer);
  }

  // Logits only for the rows asked for: each sequence's last token, or all.
  std::vector<int64_t> logit_rows;
  out->row_offset.clear();
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    out->row_offset.push_back(static_cast<int64_t>(logit_rows.size()));
    const int64_t first = batch.seqs[s].all_logits ? 0 : attn[s].num_new - 1;
    for (int64_t t = first; t < attn[s].num_new; ++t) logit_rows.push_back(attn[s].row_begin + t);
  }
  const int64_t n_out = static_cast<int64_t>(logit_rows.size());
  std::vector<float> last(n_out * hidden);
  for (int64_t i = 0; i < n_out; ++i) {
    RmsNorm(x.data() + logit_rows[i] * hidden, final_norm_.data(), 1, hidden, eps,
            last.data() + i * hidden, bf16);
  }
  out->vocab_size = config_.vocab_size;
  out->logits.assign(static_cast<size_t>(n_out * config_.vocab_size), 0.0f);
  const float* head = lm_head_.empty() ? embed_.data() : lm_head_.data();
  // A bf16 model's lm_head returns bf16 logits.
  MatMulTransposed(pool_, last.data(), n_out, hidden, head, config_.vocab_size, nullptr,
                   out->logits.data(), bf16);
  return absl::OkStatus();
}

}  // namespace tandem
