#include "common/sampling/stop_checker.h"

#include <algorithm>

namespace tandem {

std::string_view FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "none";
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "none";
}

StopChecker::StopChecker(const StoppingParams& params, std::vector<int32_t> eos_ids)
    : params_(params), eos_ids_(std::move(eos_ids)) {
  for (const std::string& s : params_.stop) max_stop_len_ = std::max(max_stop_len_, s.size());
}

StopDecision StopChecker::OnToken(int32_t token, std::string_view delta) {
  StopDecision d;
  if (finished_) {
    // Tokens after the end (a caller still draining a batch) change nothing.
    d.finished = true;
    d.reason = reason_;
    return d;
  }
  ++generated_;
  // pending_ holds only the held-back tail (shorter than the longest stop
  // string) plus the new text, so the search is incremental: released text
  // was checked before it left.
  pending_.append(delta);
  if (!params_.stop.empty()) {
    size_t best = std::string::npos;
    const std::string* best_stop = nullptr;
    for (const std::string& s : params_.stop) {
      const size_t pos = pending_.find(s);
      if (pos != std::string::npos && (pos < best || (pos == best && s.size() > best_stop->size()))) {
        best = pos;
        best_stop = &s;
      }
    }
    if (best_stop != nullptr) {
      const size_t end = params_.include_stop_str_in_output ? best + best_stop->size() : best;
      d.text = pending_.substr(0, end);
      pending_.clear();
      d.finished = true;
      d.reason = FinishReason::kStop;
      d.matched_stop = *best_stop;
      finished_ = true;
      reason_ = d.reason;
      return d;
    }
  }
  const bool past_min = generated_ >= params_.min_new_tokens;
  const bool is_eos = !params_.ignore_eos && std::find(eos_ids_.begin(), eos_ids_.end(), token) != eos_ids_.end();
  const bool is_stop_id =
      std::find(params_.stop_token_ids.begin(), params_.stop_token_ids.end(), token) != params_.stop_token_ids.end();
  if (past_min && (is_eos || is_stop_id)) {
    d.finished = true;
    d.reason = FinishReason::kStop;
  } else if (generated_ >= params_.max_new_tokens) {
    d.finished = true;
    d.reason = FinishReason::kLength;
  }
  if (d.finished) {
    finished_ = true;
    reason_ = d.reason;
    d.text = std::move(pending_);
    pending_.clear();
    return d;
  }
  // Release everything except the longest suffix that is a proper prefix
  // of some stop string (so shorter than max_stop_len_): no stop string can
  // start in the released part, since it would have been found above or its
  // start would lie in that suffix.
  size_t hold = 0;
  for (const std::string& s : params_.stop) {
    for (size_t len = std::min(s.size() - 1, pending_.size()); len > hold; --len) {
      if (pending_.compare(pending_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  d.text = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return d;
}

std::string StopChecker::Flush() {
  std::string out = std::move(pending_);
  pending_.clear();
  return out;
}

}  // namespace tandem
