// The math of a Llama-family forward pass over a paged KV cache. A backend
// owns the weights and the KV pool memory; it knows nothing of requests,
// sampling or which blocks belong to whom (that bookkeeping lives in
// Engine and KvCacheManager), so the CPU and CUDA backends share it.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/kv/kv_layout.h"
#include "common/model/model_config.h"
#include "common/sampling/sampler.h"

namespace tandem {

// One sequence's part of a forward batch. Positions start at `num_cached`:
// the KV of tokens [0, num_cached) is already in the blocks of
// `block_table`, and the new tokens' K/V are written right after them.
// `block_table` must cover num_cached + tokens.size() positions.
struct SequenceChunk {
  std::span<const int32_t> tokens;
  int32_t num_cached = 0;
  std::span<const int32_t> block_table;
  // Logits for every new token (teacher forcing, tests) instead of only the
  // last one.
  bool all_logits = false;
};

// What a backend that samples on its own device needs to pick a
// sequence's next token (the host Sampler's inputs).
struct SampleSpec {
  const SamplingParams* params = nullptr;
  TokenHistory history;
  uint64_t seed = 0;
  uint64_t step = 0;
};

struct ForwardBatch {
  std::vector<SequenceChunk> seqs;
  // One per sequence, or empty. Only read when the backend
  // samples_on_device(): it then samples each sequence's last row and
  // returns ForwardOutput::samples instead of logits.
  std::vector<SampleSpec> sample;
  // Called after layer `l`'s K/V of every sequence are in the pool, while
  // later layers may still compute: the hook for layer-wise KV transfer.
  std::function<void(int layer)> on_layer_done;
};

// Logits rows in batch order: for each sequence, one row (its last token) or
// tokens.size() rows when all_logits. row_offset[i] is sequence i's first row.
struct ForwardOutput {
  std::vector<SampleResult> samples;  // set instead of logits when sampled
  int64_t vocab_size = 0;
  std::vector<float> logits;  // [num_rows][vocab_size]
  std::vector<int64_t> row_offset;
  std::span<const float> Row(int64_t r) const {
    return {logits.data() + r * vocab_size, static_cast<size_t>(vocab_size)};
  }
};

// Host-visible access to the KV pool, for transports and tests. Pointers
// are into backend-owned memory (device memory for GPU backends).
// Invariant every backend keeps: the blocks of one layer's K (and of its V)
// are contiguous, block b at KeyBlock(layer, 0) + b * layout().block_bytes(),
// so a transport can register each layer's array as one region.
class KvPoolView {
 public:
  virtual ~KvPoolView() = default;
  virtual const KvLayout& layout() const = 0;
  virtual int32_t num_blocks() const = 0;
  virtual void* KeyBlock(int layer, int32_t block) = 0;
  virtual void* ValueBlock(int layer, int32_t block) = 0;
  virtual bool on_device() const = 0;
};

class ModelBackend {
 public:
  virtual ~ModelBackend() = default;
  virtual const ModelConfig& config() const = 0;
  virtual KvPoolView& kv_pool() = 0;
  // Runs the model over `batch`, writing new K/V into the pool and returning
  // logits. Sequences in a batch never influence each other's results.
  virtual absl::Status Forward(const ForwardBatch& batch, ForwardOutput* out) = 0;
  // True when Forward() samples ForwardBatch::sample on the device itself,
  // so that logits never cross to the host.
  virtual bool samples_on_device() const { return false; }
  // How this backend computes ("cpu, bf16 activations", "cuda, bf16"): two
  // workers give the same tokens as one process only when they agree on
  // it, so the KV handshake compares it (CheckKvCompatible).
  virtual std::string numerics() const = 0;
};

}  // namespace tandem
