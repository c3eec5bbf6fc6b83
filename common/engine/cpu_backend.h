// The CPU implementation of ModelBackend: fp32 weights and KV, the kernels
// of cpu_kernels.h and cpu_attention.h, threads from a ThreadPool.
//
// Two numerics: plain fp32 activations, or bf16 activations (the default
// for bf16 checkpoints), which rounds to bf16 wherever a bf16 Hugging Face
// model rounds (and the CUDA backend with it), so the CPU engine agrees
// with both as they agree with each other. Values stay in fp32 buffers
// either way (the KV pool too, so its layout and transports do not change);
// in bf16 mode every activation handed on (K/V in the pool, logits) is an
// exact bf16 value.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "common/engine/cpu_kv_pool.h"
#include "common/engine/model_backend.h"
#include "common/model/weight_store.h"
#include "common/util/thread_pool.h"

namespace tandem {

struct CpuBackendOptions {
  int32_t num_kv_blocks = 1024;
  int32_t block_size = 16;
  int num_threads = 1;
  // Round activations to bf16 as a bf16 model does (see above). Unset: on
  // exactly when every weight tensor the backend reads is stored as bf16
  // (the tensors' own dtype decides, not config.json's torch_dtype, which
  // dummy and converted checkpoints may not match). Forced on for non-bf16
  // weights, the weights are rounded to bf16 too, as loading the checkpoint
  // into a bf16 model would. Prefill and decode workers exchanging KV must
  // agree on it.
  std::optional<bool> bf16_activations;
};

// Forward() is called by one thread at a time (the engine's scheduling
// loop); it uses the pool's threads internally.
class CpuBackend final : public ModelBackend {
 public:
  // Converts every weight to fp32 (fusing q/k/v and gate/up), validating
  // names and shapes against the config.
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(const ModelConfig& config,
                                                            const WeightStore& weights,
                                                            const CpuBackendOptions& options);

  const ModelConfig& config() const override { return config_; }
  KvPoolView& kv_pool() override { return kv_; }
  absl::Status Forward(const ForwardBatch& batch, ForwardOutput* out) override;

  // Whether this backend runs with bf16 activations.
  bool bf16_activations() const { return bf16_; }
  std::string numerics() const override { return bf16_ ? "cpu, bf16 activations" : "cpu, fp32 activations"; }

 private:
  struct Layer {
    std::vector<float> attn_norm;  // [hidden]
    std::vector<float> wqkv;       // [q_size + 2 kv_size, hidden]
    std::vector<float> bqkv;       // [q_size + 2 kv_size] or empty
    std::vector<float> wo;         // [hidden, q_size]
    std::vector<float> ffn_norm;   // [hidden]
    std::vector<float> w_gate_up;  // [2 intermediate, hidden]
    std::vector<float> w_down;     // [hidden, intermediate]
  };

  CpuBackend(const ModelConfig& config, const CpuBackendOptions& options);
  absl::Status ValidateBatch(const ForwardBatch& batch) const;

  ModelConfig config_;
  CpuKvPool kv_;
  ThreadPool pool_;
  bool bf16_ = false;
  std::vector<double> rope_inv_freq_;
  std::vector<float> rope_inv_freq_f32_;  // the same, in fp32 (bf16 mode)
  std::vector<float> embed_;       // [vocab, hidden]
  std::vector<float> final_norm_;  // [hidden]
  std::vector<float> lm_head_;     // [vocab, hidden]; empty when tied to embed_
  std::vector<Layer> layers_;
};

}  // namespace tandem
