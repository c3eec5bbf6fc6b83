// The CPU implementation of ModelBackend: fp32 weights and KV, the kernels
// of cpu_kernels.h and cpu_attention.h, threads from a ThreadPool.
#pragma once

#include <cstdint>
#include <memory>
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
  std::vector<double> rope_inv_freq_;
  std::vector<float> embed_;       // [vocab, hidden]
  std::vector<float> final_norm_;  // [hidden]
  std::vector<float> lm_head_;     // [vocab, hidden]; empty when tied to embed_
  std::vector<Layer> layers_;
};

}  // namespace tandem
