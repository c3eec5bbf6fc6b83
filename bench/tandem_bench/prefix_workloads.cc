#include "bench/tandem_bench/prefix_workloads.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/kv/block_hash.h"

namespace tandem::bench {

absl::StatusOr<std::vector<BenchRequest>> MakeSystemPromptWorkload(const WorkloadOptions& o) {
  if (o.system_prompts < 1) return absl::InvalidArgumentError("--system_prompts must be >= 1");
  std::mt19937_64 g(o.seed);
  std::vector<std::vector<int32_t>> prefixes;
  for (int i = 0; i < o.system_prompts; ++i) {
    prefixes.push_back(RandomTokens(g, DrawLength(o.system_prompt_len, g, true, o.max_input), o.vocab_size));
  }
  std::vector<BenchRequest> out;
  for (int i = 0; i < o.num_requests; ++i) {
    BenchRequest r;
    r.prompt = prefixes[static_cast<size_t>(i % o.system_prompts)];
    const std::vector<int32_t> user = RandomTokens(g, DrawLength(o.input, g, true, o.max_input), o.vocab_size);
    r.prompt.insert(r.prompt.end(), user.begin(), user.end());
    r.output_tokens = DrawLength(o.output, g, false, o.max_output);
    if (static_cast<int64_t>(r.prompt.size()) + r.output_tokens > o.max_context) {
      return absl::InvalidArgumentError(absl::StrCat("a system_prompt request of ", r.prompt.size(), " + ",
                                                     r.output_tokens, " tokens exceeds the model's context of ",
                                                     o.max_context, ": lower --system_prompt_len or --input_len"));
    }
    out.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<std::vector<BenchRequest>> MakeMultiTurnWorkload(const WorkloadOptions& o) {
  if (o.conversations < 1) return absl::InvalidArgumentError("--conversations must be >= 1");
  std::mt19937_64 g(o.seed);
  std::vector<BenchRequest> out;
  std::vector<int64_t> length(static_cast<size_t>(o.conversations), 0);
  for (int i = 0; i < o.num_requests; ++i) {
    BenchRequest r;
    r.conversation = i % o.conversations;
    r.turn = i / o.conversations;
    r.prompt = RandomTokens(g, DrawLength(o.input, g, true, o.max_input), o.vocab_size);
    r.output_tokens = DrawLength(o.output, g, false, o.max_output);
    int64_t& total = length[static_cast<size_t>(r.conversation)];
    total += static_cast<int64_t>(r.prompt.size()) + r.output_tokens;
    if (total > o.max_context) {
      return absl::InvalidArgumentError(absl::StrCat(
          "conversation ", r.conversation, " reaches ", total, " tokens at turn ", r.turn, ", past the context of ",
          o.max_context, ": raise --conversations or lower --num_requests, --input_len or --output_len"));
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<int32_t> ConversationPrompt(std::span<const int32_t> history, std::span<const int32_t> user_message) {
  std::vector<int32_t> p(history.begin(), history.end());
  p.insert(p.end(), user_message.begin(), user_message.end());
  return p;
}

PrefixHits OraclePrefixHits(std::span<const RequestRecord> records, int32_t block_size, bool answers_cached) {
  // When each request's blocks exist somewhere, in time order.
  struct Computed {
    double at;
    const RequestRecord* rec;
    bool with_answer;
  };
  std::vector<Computed> computed;
  std::vector<const RequestRecord*> sent;
  for (const RequestRecord& r : records) {
    if (!r.ok) continue;
    sent.push_back(&r);
    computed.push_back({r.sent + r.ttft(), &r, false});
    if (answers_cached) computed.push_back({r.sent + r.e2e(), &r, true});
  }
  std::sort(computed.begin(), computed.end(), [](const Computed& a, const Computed& b) { return a.at < b.at; });
  std::sort(sent.begin(), sent.end(), [](const RequestRecord* a, const RequestRecord* b) { return a->sent < b->sent; });
  absl::flat_hash_set<BlockHash> cached;
  size_t next = 0;
  PrefixHits hits;
  for (const RequestRecord* r : sent) {
    for (; next < computed.size() && computed[next].at <= r->sent; ++next) {
      const RequestRecord& c = *computed[next].rec;
      std::vector<int32_t> tokens = c.prompt_ids;
      // The last generated token is sampled, never fed back: no KV.
      if (computed[next].with_answer && c.output_ids.size() > 1) {
        tokens.insert(tokens.end(), c.output_ids.begin(), c.output_ids.end() - 1);
      }
      for (const BlockHash& k : HashFullBlocks(tokens, block_size, "")) cached.insert(k);
    }
    hits.prompt_tokens += static_cast<int64_t>(r->prompt_ids.size());
    // A worker computes at least the prompt's last token (its logits give
    // the first output token), so a hit stops a block short of a prompt
    // that ends on a block boundary.
    const int64_t most = r->prompt_ids.empty() ? 0 : static_cast<int64_t>(r->prompt_ids.size() - 1) / block_size;
    int64_t blocks = 0;
    for (const BlockHash& k : HashFullBlocks(r->prompt_ids, block_size, "")) {
      if (blocks == most || !cached.contains(k)) break;
      ++blocks;
    }
    hits.hit_tokens += blocks * block_size;
  }
  return hits;
}

}  // namespace tandem::bench
