#include "common/engine/cpu_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/engine/cpu_kernels.h"

namespace tandem {

void PagedAttention(ThreadPool& pool, CpuKvPool& kv, int layer, std::span<const AttentionSeq> seqs,
                    int64_t num_heads, const float* q, float* out, bool bf16) {
  const KvLayout& layout = kv.layout();
  const int64_t head_dim = layout.head_dim;
  const int64_t kv_heads = layout.num_kv_heads;
  const int64_t group = num_heads / kv_heads;
  const int64_t bs = layout.block_size;
  const int64_t q_stride = num_heads * head_dim;
  const int64_t kv_row = kv_heads * head_dim;  // floats per token slot
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));

  // Work items are (sequence's new token, query head) pairs, flattened.
  std::vector<std::pair<int64_t, int64_t>> items;  // (seq index, token index within seq)
  int64_t max_ctx = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (int64_t t = 0; t < seqs[s].num_new; ++t) items.emplace_back(s, t);
    max_ctx = std::max(max_ctx, seqs[s].num_cached + seqs[s].num_new);
  }
  const int64_t n_items = static_cast<int64_t>(items.size()) * num_heads;

  pool.ParallelFor(n_items, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(max_ctx));
    std::vector<float> acc(static_cast<size_t>(head_dim));
    for (int64_t it = begin; it < end; ++it) {
      const auto [s, t] = items[static_cast<size_t>(it / num_heads)];
      const int64_t h = it % num_heads;
      const AttentionSeq& seq = seqs[static_cast<size_t>(s)];
      const int64_t row = seq.row_begin + t;
      const int64_t ctx = seq.num_cached + t + 1;  // causal: up to itself
      const int64_t kvh = h / group;
      const float* qh = q + row * q_stride + h * head_dim;

      float max_score = -INFINITY;
      for (int64_t p = 0; p < ctx; ++p) {
        const float* k = kv.Key(layer, seq.block_table[p / bs]) + (p % bs) * kv_row + kvh * head_dim;
        float dot = 0.0f;
        for (int64_t d = 0; d < head_dim; ++d) dot += qh[d] * k[d];
        scores[p] = dot * scale;
        max_score = std::max(max_score, scores[p]);
      }
      float denom = 0.0f;
      for (int64_t p = 0; p < ctx; ++p) {
        scores[p] = std::exp(scores[p] - max_score);
        denom += scores[p];
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t p = 0; p < ctx; ++p) {
        const float* v =
            kv.Value(layer, seq.block_table[p / bs]) + (p % bs) * kv_row + kvh * head_dim;
        const float w = bf16 ? RoundBf16(scores[p]) : scores[p];
        for (int64_t d = 0; d < head_dim; ++d) acc[d] += w * v[d];
      }
      float* o = out + row * q_stride + h * head_dim;
      const float inv = 1.0f / denom;
      if (bf16) {
        for (int64_t d = 0; d < head_dim; ++d) o[d] = RoundBf16(acc[d] * inv);
      } else {
        for (int64_t d = 0; d < head_dim; ++d) o[d] = acc[d] * inv;
      }
    }
  });
}

}  // namespace tandem
