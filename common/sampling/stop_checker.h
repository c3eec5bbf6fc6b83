// When a generation ends, token by token: max_new_tokens, EOS and stop
// token ids, and stop strings in the detokenized text, even when a stop
// string spans several tokens.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/sampling/sampling_params.h"

namespace tandem {

enum class FinishReason { kNone, kLength, kStop, kCancelled, kError };
// "none", "length", "stop", "cancelled", "error".
std::string_view FinishReasonName(FinishReason r);

struct StopDecision {
  bool finished = false;
  FinishReason reason = FinishReason::kNone;
  std::string text;          // text released to the client by this token
  std::string matched_stop;  // the stop string that matched, if any
};

// One per request, used by one thread. Text that could be the beginning of
// a stop string is held back until it is known not to be one; a matched
// stop string and everything after it are never released (the stop string
// is, with include_stop_str_in_output). When the generation ends for any
// other reason, the held-back text is released in that decision.
class StopChecker {
 public:
  StopChecker(const StoppingParams& params, std::vector<int32_t> eos_ids);

  // `delta` is the text this token added to the output (may be empty).
  StopDecision OnToken(int32_t token, std::string_view delta);
  // Held-back text, for a stream the caller ends for another reason.
  std::string Flush();
  int32_t num_generated() const { return generated_; }

 private:
  StoppingParams params_;
  std::vector<int32_t> eos_ids_;
  size_t max_stop_len_ = 0;
  int32_t generated_ = 0;
  // Text not yet released: shorter than max_stop_len_ between calls, which
  // keeps the stop-string search incremental.
  std::string pending_;
  bool finished_ = false;
  FinishReason reason_ = FinishReason::kNone;
};

}  // namespace tandem
