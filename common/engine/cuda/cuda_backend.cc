#include "common/engine/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/engine/cpu_kernels.h"
#include "common/engine/cuda/cuda_check.h"
#include "common/engine/cuda/cuda_kernels.h"
#include "common/engine/cuda/device_buffer.h"
#include "common/kv/kv_layout.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

// Device memory kept out of the KV pool for forward scratch (activations,
// attention partials, logits) and cuBLAS workspaces.
constexpr double kScratchReserve = 3.0 * (1 << 30);

// Device KV pool: one allocation; per layer a K and a V array of
// [num_blocks][block_size][kv_heads][head_dim] bf16.
class CudaKvPool final : public KvPoolView {
 public:
  absl::Status Init(const KvLayout& layout, int32_t num_blocks) {
    layout_ = layout;
    num_blocks_ = num_blocks;
    TANDEM_RETURN_IF_ERROR(buffer_.Allocate(static_cast<size_t>(layout.block_bytes_all_layers()) * num_blocks));
    return CudaStatus(cudaMemset(buffer_.get(), 0, buffer_.bytes()), "cudaMemset(KV pool)");
  }
  const KvLayout& layout() const override { return layout_; }
  int32_t num_blocks() const override { return num_blocks_; }
  void* KeyBlock(int layer, int32_t block) override { return Base(layer, 0) + block * layout_.block_bytes(); }
  void* ValueBlock(int layer, int32_t block) override { return Base(layer, 1) + block * layout_.block_bytes(); }
  bool on_device() const override { return true; }
  __nv_bfloat16* Key(int layer) { return reinterpret_cast<__nv_bfloat16*>(Base(layer, 0)); }
  __nv_bfloat16* Value(int layer) { return reinterpret_cast<__nv_bfloat16*>(Base(layer, 1)); }

 private:
  char* Base(int layer, int kv) {
    return buffer_.as<char>() + (static_cast<int64_t>(layer) * 2 + kv) * num_blocks_ * layout_.block_bytes();
  }
  KvLayout layout_;
  int32_t num_blocks_ = 0;
  DeviceBuffer buffer_;
};

class CudaBackend final : public ModelBackend {
 public:
  ~CudaBackend() override {
    if (cublas_ != nullptr) cublasDestroy(cublas_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  absl::Status Init(const ModelConfig& config, const WeightStore& weights, const CudaBackendOptions& o) {
    config_ = config;
    options_ = o;
    TANDEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(o.device));
    TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    TANDEM_CUBLAS_RETURN_IF_ERROR(cublasCreate(&cublas_));
    TANDEM_CUBLAS_RETURN_IF_ERROR(cublasSetStream(cublas_, stream_));
    const int64_t h = config.hidden_size, v = config.vocab_size, inter = config.intermediate_size;
    const int64_t qs = config.q_size(), kvs = config.kv_size();
    TANDEM_RETURN_IF_ERROR(Upload(weights, {{"model.embed_tokens.weight", {v, h}}}, &embed_));
    TANDEM_RETURN_IF_ERROR(Upload(weights, {{"model.norm.weight", {h}}}, &final_norm_));
    if (!config.tie_word_embeddings) {
      TANDEM_RETURN_IF_ERROR(Upload(weights, {{"lm_head.weight", {v, h}}}, &lm_head_));
    }
    layers_.resize(static_cast<size_t>(config.num_hidden_layers));
    for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
      Layer& l = layers_[static_cast<size_t>(i)];
      const std::string p = absl::StrCat("model.layers.", i, ".");
      TANDEM_RETURN_IF_ERROR(Upload(weights, {{p + "input_layernorm.weight", {h}}}, &l.attn_norm));
      TANDEM_RETURN_IF_ERROR(Upload(weights,
                                    {{p + "self_attn.q_proj.weight", {qs, h}},
                                     {p + "self_attn.k_proj.weight", {kvs, h}},
                                     {p + "self_attn.v_proj.weight", {kvs, h}}},
                                    &l.wqkv));
      if (config.attention_bias) {
        TANDEM_RETURN_IF_ERROR(Upload(weights,
                                      {{p + "self_attn.q_proj.bias", {qs}},
                                       {p + "self_attn.k_proj.bias", {kvs}},
                                       {p + "self_attn.v_proj.bias", {kvs}}},
                                      &l.bqkv));
      }
      TANDEM_RETURN_IF_ERROR(Upload(weights, {{p + "self_attn.o_proj.weight", {h, qs}}}, &l.wo));
      TANDEM_RETURN_IF_ERROR(Upload(weights, {{p + "post_attention_layernorm.weight", {h}}}, &l.ffn_norm));
      TANDEM_RETURN_IF_ERROR(Upload(weights,
                                    {{p + "mlp.gate_proj.weight", {inter, h}}, {p + "mlp.up_proj.weight", {inter, h}}},
                                    &l.w_gate_up));
      TANDEM_RETURN_IF_ERROR(Upload(weights, {{p + "mlp.down_proj.weight", {h, inter}}}, &l.w_down));
    }
    // RoPE frequencies, computed once on the host in double.
    std::vector<float> inv;
    for (double f : RopeInverseFrequencies(config)) inv.push_back(static_cast<float>(f));
    TANDEM_RETURN_IF_ERROR(inv_freq_.Allocate(inv.size() * sizeof(float)));
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpy(inv_freq_.get(), inv.data(), inv.size() * sizeof(float), cudaMemcpyHostToDevice));

    // The KV pool: what is asked for, or a fraction of what is left.
    const KvLayout layout = KvLayoutFor(config, o.block_size, DType::kBF16);
    int32_t blocks = o.num_kv_blocks;
    if (blocks <= 0) {
      size_t free_bytes = 0, total_bytes = 0;
      TANDEM_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
      // Our budget is a share of the whole device; what we hold already
      // (weights) counts against it, and we never take more than is free.
      const double budget = static_cast<double>(total_bytes) * o.gpu_memory_fraction;
      const double used_by_us = static_cast<double>(weight_bytes_);
      const double avail = std::min(budget - used_by_us, static_cast<double>(free_bytes) - kScratchReserve);
      blocks = static_cast<int32_t>(std::max(0.0, avail) / static_cast<double>(layout.block_bytes_all_layers()));
    }
    if (blocks <= 0) return absl::ResourceExhaustedError("no device memory left for the KV cache");
    TANDEM_RETURN_IF_ERROR(kv_.Init(layout, blocks));
    TANDEM_CUDA_RETURN_IF_ERROR(
        cuda::ConfigurePagedAttention(cuda::PagedAttentionSharedBytes(o.max_context, config.head_dim)));
    TANDEM_LOG(INFO) << "CUDA backend: weights " << weight_bytes_ / (1 << 20) << " MiB, KV pool " << blocks
                     << " blocks of " << o.block_size << " tokens ("
                     << layout.block_bytes_all_layers() * static_cast<int64_t>(blocks) / (1 << 20) << " MiB)";
    return absl::OkStatus();
  }

  const ModelConfig& config() const override { return config_; }
  KvPoolView& kv_pool() override { return kv_; }
  absl::Status Forward(const ForwardBatch& batch, ForwardOutput* out) override;

 private:
  struct Layer {
    DeviceBuffer attn_norm, wqkv, bqkv, wo, ffn_norm, w_gate_up, w_down;
  };

  // Concatenates the named tensors (checked against their shapes) as bf16
  // into one device buffer.
  absl::Status Upload(const WeightStore& store, const std::vector<std::pair<std::string, std::vector<int64_t>>>& parts,
                      DeviceBuffer* dst) {
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
    weight_bytes_ += static_cast<int64_t>(host.size() * 2);
    return CudaStatus(cudaMemcpy(dst->get(), host.data(), host.size() * 2, cudaMemcpyHostToDevice), "upload weights");
  }

  // y[rows][n] (fp32) = x[rows][k] (bf16) . w[n][k]^T (bf16).
  absl::Status Gemm(const __nv_bfloat16* x, int64_t rows, int64_t k, const DeviceBuffer& w, int64_t n, float* y) {
    const float alpha = 1.0f, beta = 0.0f;
    return CublasStatus(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(rows),
                                     static_cast<int>(k), &alpha, w.get(), CUDA_R_16BF, static_cast<int>(k), x,
                                     CUDA_R_16BF, static_cast<int>(k), &beta, y, CUDA_R_32F, static_cast<int>(n),
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                        "cublasGemmEx");
  }

  ModelConfig config_;
  CudaBackendOptions options_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  DeviceBuffer embed_, final_norm_, lm_head_, inv_freq_;
  std::vector<Layer> layers_;
  CudaKvPool kv_;
  int64_t weight_bytes_ = 0;
  // Per-forward scratch, grown on demand.
  DeviceBuffer meta_, x_, normed_, qkv_, attn_, delta_, gate_up_, act_, logits_;
};

absl::Status CudaBackend::Forward(const ForwardBatch& batch, ForwardOutput* out) {
  const int64_t hidden = config_.hidden_size, inter = config_.intermediate_size, vocab = config_.vocab_size;
  const int64_t qs = config_.q_size(), kvs = config_.kv_size(), qkv = qs + 2 * kvs;
  const int32_t bs = kv_.layout().block_size;
  // Host-side batch description, uploaded in one copy.
  std::vector<int32_t> tokens, positions, slot_block, row_seq, tables, table_offset, logit_rows;
  out->row_offset.clear();
  int64_t max_context = 0;
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SequenceChunk& c = batch.seqs[s];
    const int64_t end = c.num_cached + static_cast<int64_t>(c.tokens.size());
    if (c.tokens.empty() || static_cast<int64_t>(c.block_table.size()) * bs < end) {
      return absl::InvalidArgumentError(absl::StrCat("batch sequence ", s, ": no tokens or a block table of ",
                                                     c.block_table.size(), " blocks for ", end, " positions"));
    }
    if (end > options_.max_context) {
      return absl::InvalidArgumentError(absl::StrCat("batch sequence ", s, " reaches position ", end,
                                                     ", past the backend's max_context ", options_.max_context));
    }
    max_context = std::max(max_context, end);
    table_offset.push_back(static_cast<int32_t>(tables.size()));
    for (int32_t b : c.block_table) {
      if (b < 0 || b >= kv_.num_blocks()) {
        return absl::InvalidArgumentError(absl::StrCat("batch sequence ", s, ": block ", b, " is outside the KV pool"));
      }
      tables.push_back(b);
    }
    out->row_offset.push_back(static_cast<int64_t>(logit_rows.size()));
    for (size_t t = 0; t < c.tokens.size(); ++t) {
      if (c.tokens[t] < 0 || c.tokens[t] >= vocab) {
        return absl::InvalidArgumentError(absl::StrCat("token id ", c.tokens[t], " in batch sequence ", s,
                                                       " is outside the vocabulary [0, ", vocab, ")"));
      }
      const int32_t pos = static_cast<int32_t>(c.num_cached + t);
      if (c.all_logits || t + 1 == c.tokens.size()) logit_rows.push_back(static_cast<int32_t>(tokens.size()));
      tokens.push_back(c.tokens[t]);
      positions.push_back(pos);
      slot_block.push_back(c.block_table[pos / bs]);
      row_seq.push_back(static_cast<int32_t>(s));
    }
  }
  const int64_t rows = static_cast<int64_t>(tokens.size()), n_out = static_cast<int64_t>(logit_rows.size());
  std::vector<int32_t> meta;
  auto append = [&meta](const std::vector<int32_t>& v) {
    const size_t at = meta.size();
    meta.insert(meta.end(), v.begin(), v.end());
    return at;
  };
  const size_t o_tokens = append(tokens), o_pos = append(positions), o_slot = append(slot_block),
               o_seq = append(row_seq), o_tables = append(tables), o_toff = append(table_offset),
               o_logit = append(logit_rows);
  TANDEM_RETURN_IF_ERROR(meta_.Reserve(meta.size() * 4));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(meta_.get(), meta.data(), meta.size() * 4, cudaMemcpyHostToDevice, stream_));
  const int32_t* d = meta_.as<int32_t>();
  TANDEM_RETURN_IF_ERROR(x_.Reserve(rows * hidden * 4));
  TANDEM_RETURN_IF_ERROR(normed_.Reserve(rows * std::max(hidden, qs) * 2));
  TANDEM_RETURN_IF_ERROR(qkv_.Reserve(rows * qkv * 4));
  TANDEM_RETURN_IF_ERROR(attn_.Reserve(rows * qs * 2));
  TANDEM_RETURN_IF_ERROR(delta_.Reserve(rows * hidden * 4));
  TANDEM_RETURN_IF_ERROR(gate_up_.Reserve(rows * 2 * inter * 4));
  TANDEM_RETURN_IF_ERROR(act_.Reserve(rows * inter * 2));
  TANDEM_RETURN_IF_ERROR(logits_.Reserve(n_out * vocab * 4));

  auto* x = x_.as<float>();
  auto* normed = normed_.as<__nv_bfloat16>();
  const float eps = static_cast<float>(config_.rms_norm_eps);
  cuda::EmbeddingGather(d + o_tokens, embed_.as<__nv_bfloat16>(), rows, hidden, x, stream_);
  for (int layer = 0; layer < static_cast<int>(layers_.size()); ++layer) {
    Layer& w = layers_[static_cast<size_t>(layer)];
    cuda::RmsNorm(x, nullptr, w.attn_norm.as<__nv_bfloat16>(), rows, hidden, eps, normed, stream_);
    TANDEM_RETURN_IF_ERROR(Gemm(normed, rows, hidden, w.wqkv, qkv, qkv_.as<float>()));
    cuda::RopeCacheArgs rc{qkv_.as<float>(), w.bqkv.as<__nv_bfloat16>(), d + o_pos, d + o_slot, rows,
                           config_.num_attention_heads, config_.num_key_value_heads, config_.head_dim, bs,
                           inv_freq_.as<float>(), kv_.Key(layer), kv_.Value(layer)};
    cuda::RopeAndWriteCache(rc, stream_);
    cuda::AttentionArgs aa{qkv_.as<float>(), qkv, d + o_pos, d + o_seq, d + o_tables, d + o_toff, rows,
                           config_.num_attention_heads, config_.num_key_value_heads, config_.head_dim, bs,
                           max_context, kv_.Key(layer), kv_.Value(layer), attn_.as<__nv_bfloat16>()};
    cuda::PagedAttention(aa, stream_);
    TANDEM_RETURN_IF_ERROR(Gemm(attn_.as<__nv_bfloat16>(), rows, qs, w.wo, hidden, delta_.as<float>()));
    cuda::AddInPlace(x, delta_.as<float>(), rows * hidden, stream_);
    cuda::RmsNorm(x, nullptr, w.ffn_norm.as<__nv_bfloat16>(), rows, hidden, eps, normed, stream_);
    TANDEM_RETURN_IF_ERROR(Gemm(normed, rows, hidden, w.w_gate_up, 2 * inter, gate_up_.as<float>()));
    cuda::SiluMul(gate_up_.as<float>(), rows, inter, act_.as<__nv_bfloat16>(), stream_);
    TANDEM_RETURN_IF_ERROR(Gemm(act_.as<__nv_bfloat16>(), rows, inter, w.w_down, hidden, delta_.as<float>()));
    cuda::AddInPlace(x, delta_.as<float>(), rows * hidden, stream_);
    if (batch.on_layer_done) {
      // The layer's K/V must be in memory before a transport reads it.
      TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
      batch.on_layer_done(layer);
    }
  }
  cuda::RmsNorm(x, d + o_logit, final_norm_.as<__nv_bfloat16>(), n_out, hidden, eps, normed, stream_);
  TANDEM_RETURN_IF_ERROR(Gemm(normed, n_out, hidden, lm_head_.get() ? lm_head_ : embed_, vocab, logits_.as<float>()));
  cuda::RoundToBf16(logits_.as<float>(), n_out * vocab, stream_);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  out->vocab_size = vocab;
  out->logits.resize(static_cast<size_t>(n_out * vocab));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out->logits.data(), logits_.get(), out->logits.size() * 4,
                                              cudaMemcpyDeviceToHost, stream_));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelBackend>> CreateCudaBackend(const ModelConfig& config, const WeightStore& weights,
                                                                const CudaBackendOptions& options) {
  if (config.head_dim % 2 != 0 || config.head_dim > 256) {
    return absl::InvalidArgumentError(absl::StrCat("head_dim ", config.head_dim, " is not supported (even, <= 256)"));
  }
  auto b = std::make_unique<CudaBackend>();
  TANDEM_RETURN_IF_ERROR(b->Init(config, weights, options));
  return std::unique_ptr<ModelBackend>(std::move(b));
}

}  // namespace tandem
