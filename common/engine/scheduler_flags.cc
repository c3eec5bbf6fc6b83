#include "common/engine/scheduler_flags.h"

#include "absl/flags/flag.h"

// Defaults: the batch is bounded by the KV pool and the token budget, not by
// a small constant (CUDA graphs are captured up to 512 sequences); 8192
// tokens per step kept the 8B workload within 1.5x its roofline on an H200.
ABSL_FLAG(int32_t, max_batch_size, 0, "most sequences computing in one step (0: 512 on a GPU, 64 on the CPU)");
ABSL_FLAG(int64_t, max_batch_tokens, 8192,
          "most tokens one step computes: one per decode step plus prompt chunks");
ABSL_FLAG(bool, chunked_prefill, true,
          "split prompts longer than the step's remaining token budget over several steps");
ABSL_FLAG(int32_t, max_chunk_tokens, 0, "longest prompt chunk of one sequence per step (0: the budget)");
ABSL_FLAG(bool, enable_prefix_caching, true,
          "start each sequence from the longest cached prefix of its tokens and keep full KV blocks cached "
          "(evicted least recently used when the pool needs room)");

namespace tandem {

SchedulerOptions SchedulerOptionsFromFlags(bool on_gpu) {
  SchedulerOptions o;
  o.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  if (o.max_batch_size == 0) o.max_batch_size = on_gpu ? 512 : 64;
  o.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  o.chunked_prefill = absl::GetFlag(FLAGS_chunked_prefill);
  o.max_chunk_tokens = absl::GetFlag(FLAGS_max_chunk_tokens);
  o.enable_prefix_caching = absl::GetFlag(FLAGS_enable_prefix_caching);
  return o;
}

}  // namespace tandem
