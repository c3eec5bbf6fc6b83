// Tokenizer::Encode on arbitrary bytes (not only UTF-8), Decode of what it
// made and of arbitrary id sequences (out-of-range ids too), and the
// IncrementalDetokenizer over them: what the router does with a prompt's
// text and with the ids workers stream back.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/tokenizer.h"
#include "fuzzer/FuzzedDataProvider.h"

namespace {

const tandem::Tokenizer* tokenizer = nullptr;

// Deltas are promised to be valid UTF-8: clients get them as proto strings.
void CheckUtf8(const std::string& s) {
  if (tandem::SanitizeUtf8(s) != s) {
    std::fprintf(stderr, "detokenizer delta is not valid UTF-8\n");
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("TANDEM_FUZZ_TOKENIZER_DIR");
  if (dir == nullptr) {
    std::fprintf(stderr, "set TANDEM_FUZZ_TOKENIZER_DIR to a directory with a tokenizer.json\n");
    std::exit(2);
  }
  absl::StatusOr<std::unique_ptr<tandem::Tokenizer>> t = tandem::Tokenizer::FromDir(dir);
  if (!t.ok()) {
    std::fprintf(stderr, "%s\n", std::string(t.status().message()).c_str());
    std::exit(2);
  }
  tokenizer = t->release();  // lives as long as the process
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks the mode (bit 0: add special tokens, 1: skip them
  // in decoding, 2: ids instead of text).
  const uint8_t mode = data[0];
  FuzzedDataProvider in(data + 1, size - 1);
  const bool skip_special = mode & 2;
  const int64_t vocab = tokenizer->vocab_size();
  std::vector<int32_t> ids;
  if (mode & 4) {
    // Mostly in-range ids, so decoding gets past the range check.
    while (in.remaining_bytes() > 0 && ids.size() < 512) {
      ids.push_back(in.ConsumeBool() ? in.ConsumeIntegralInRange<int32_t>(0, static_cast<int32_t>(vocab - 1))
                                     : in.ConsumeIntegral<int32_t>());
    }
  } else {
    const std::string text = in.ConsumeRemainingBytesAsString();
    ids = tokenizer->Encode(text, mode & 1);
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab) std::abort();
    }
  }
  (void)tokenizer->Decode(ids, skip_special);
  for (int32_t id : ids) (void)tokenizer->IdToToken(id), (void)tokenizer->IsSpecial(id);

  // Streams the second half as if generated after the first (the prompt).
  const size_t prompt = ids.size() / 2;
  tandem::IncrementalDetokenizer detok(*tokenizer, std::span<const int32_t>(ids).first(prompt), skip_special);
  for (size_t i = prompt; i < ids.size(); ++i) CheckUtf8(detok.Push(ids[i]));
  CheckUtf8(detok.Flush());
  return 0;
}
