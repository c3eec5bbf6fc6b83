#include "tools/cli/request_flags.h"

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/util/status_macros.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory; empty: the built-in default model");
ABSL_FLAG(bool, token_ids, false, "prompts are comma-separated token ids, not text");
ABSL_FLAG(bool, add_special_tokens, true, "add BOS (etc.) to text prompts");
ABSL_FLAG(std::string, output, "text", "text: stream the text; jsonl: one JSON object per token and per finish");
ABSL_FLAG(int32_t, priority, 0, "larger runs first and is preempted last");
ABSL_FLAG(float, temperature, 1.0f, "0: greedy");
ABSL_FLAG(int32_t, top_k, 0, "0: disabled");
ABSL_FLAG(float, top_p, 1.0f, "nucleus sampling mass, (0, 1]");
ABSL_FLAG(float, min_p, 0.0f, "drop tokens below min_p * p(most likely)");
ABSL_FLAG(int64_t, seed, -1, "sampling seed; -1: random");
ABSL_FLAG(float, repetition_penalty, 1.0f, "> 0; 1: off");
ABSL_FLAG(float, presence_penalty, 0.0f, "[-2, 2]");
ABSL_FLAG(float, frequency_penalty, 0.0f, "[-2, 2]");
ABSL_FLAG(int32_t, logprobs, -1, "top-n alternatives to report with each token; -1: none");
ABSL_FLAG(int32_t, max_new_tokens, 64, "most tokens to generate (64: a few sentences of the default model)");
ABSL_FLAG(int32_t, min_new_tokens, 0, "EOS and stop ids do not stop before this many tokens");
ABSL_FLAG(std::vector<std::string>, stop, {}, "stop strings (comma-separated)");
ABSL_FLAG(std::vector<std::string>, stop_token_ids, {}, "stop token ids (comma-separated)");
ABSL_FLAG(bool, ignore_eos, false, "do not stop at EOS");
ABSL_FLAG(bool, skip_special_tokens, true, "leave special tokens out of the text");

namespace tandem::cli {

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& s) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(absl::StrCat("not a token id: '", std::string(part), "'"));
    }
    ids.push_back(id);
  }
  return ids;
}

SamplingParams SamplingFromFlags() {
  SamplingParams p;
  p.temperature = absl::GetFlag(FLAGS_temperature);
  p.top_k = absl::GetFlag(FLAGS_top_k);
  p.top_p = absl::GetFlag(FLAGS_top_p);
  p.min_p = absl::GetFlag(FLAGS_min_p);
  if (absl::GetFlag(FLAGS_seed) >= 0) p.seed = absl::GetFlag(FLAGS_seed);
  p.repetition_penalty = absl::GetFlag(FLAGS_repetition_penalty);
  p.presence_penalty = absl::GetFlag(FLAGS_presence_penalty);
  p.frequency_penalty = absl::GetFlag(FLAGS_frequency_penalty);
  p.logprobs = absl::GetFlag(FLAGS_logprobs);
  return p;
}

namespace {

// Debian's abseil keeps IsSpecifiedOnCommandLine private, so a flag counts
// as given when its value differs from its default: `--temperature=1`
// spelled out still takes the model's default temperature.
bool Given(const absl::CommandLineFlag& flag) { return flag.CurrentValue() != flag.DefaultValue(); }

}  // namespace

SamplingFieldsSet SamplingFlagsGiven() {
  SamplingFieldsSet given;
  given.temperature = Given(absl::GetFlagReflectionHandle(FLAGS_temperature));
  given.top_p = Given(absl::GetFlagReflectionHandle(FLAGS_top_p));
  given.top_k = Given(absl::GetFlagReflectionHandle(FLAGS_top_k));
  given.repetition_penalty = Given(absl::GetFlagReflectionHandle(FLAGS_repetition_penalty));
  return given;
}

absl::StatusOr<StoppingParams> StoppingFromFlags() {
  StoppingParams p;
  p.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  p.min_new_tokens = absl::GetFlag(FLAGS_min_new_tokens);
  p.stop = absl::GetFlag(FLAGS_stop);
  TANDEM_ASSIGN_OR_RETURN(p.stop_token_ids, ParseIds(absl::StrJoin(absl::GetFlag(FLAGS_stop_token_ids), ",")));
  p.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  return p;
}

}  // namespace tandem::cli
