#include "common/tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/byte_level.h"

namespace tandem {
namespace {

using Json = nlohmann::json;
const std::string kMetaspace = "\xE2\x96\x81";  // U+2581 "▁"

std::string ReplaceAll(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
  return s;
}

// Owns a compiled PCRE2 pattern (UTF + Unicode properties, as the
// `tokenizers` library's onig regexes behave on these patterns).
class Regex {
 public:
  static absl::StatusOr<std::shared_ptr<Regex>> Compile(const std::string& pattern, std::string_view source) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      return absl::InvalidArgumentError(absl::StrCat(std::string(source), ": pre_tokenizer regex '", pattern,
                                                     "' does not compile at offset ", offset, ": ",
                                                     reinterpret_cast<char*>(msg)));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // best effort
    return std::shared_ptr<Regex>(new Regex(code));
  }
  ~Regex() { pcre2_code_free(code_); }

  // Calls fn(begin, end) for each non-empty match, left to right. Bytes
  // that are not valid UTF-8 never match: the valid runs between them are
  // matched separately. Linear in the text: the subject's UTF-8 is
  // validated here once, not by pcre2_match on every call.
  template <typename Fn>
  void ForEachMatch(std::string_view text, Fn fn) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    for (size_t run = 0; run < text.size();) {
      const size_t run_end = run + ValidUtf8PrefixLength(text.substr(run));
      const std::string_view valid = text.substr(run, run_end - run);
      size_t start = 0;
      while (start < valid.size()) {
        const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(valid.data()), valid.size(), start,
                                   PCRE2_NO_UTF_CHECK, md, nullptr);
        if (rc < 0) break;
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        if (ov[1] == ov[0]) {  // empty match: step one character
          size_t i = ov[0] > start ? ov[0] : start;
          if (i >= valid.size()) break;
          DecodeUtf8(valid, i);
          start = i;
          continue;
        }
        fn(run + ov[0], run + ov[1]);
        start = ov[1];
      }
      run = run_end + (run_end < text.size() ? 1 : 0);  // skip one invalid byte
    }
    pcre2_match_data_free(md);
  }

 private:
  explicit Regex(pcre2_code* code) : code_(code) {}
  pcre2_code* code_;
};

// One pre-tokenization step: pieces in, pieces out.
class Step {
 public:
  virtual ~Step() = default;
  virtual void Apply(std::vector<std::string>& pieces, bool first) const = 0;
};

class SplitStep : public Step {
 public:
  SplitStep(std::shared_ptr<Regex> re, std::string literal, std::string behavior, bool invert)
      : re_(std::move(re)), literal_(std::move(literal)), behavior_(std::move(behavior)), invert_(invert) {}
  void Apply(std::vector<std::string>& pieces, bool) const override {
    std::vector<std::string> out;
    for (const std::string& p : pieces) {
      std::vector<std::pair<size_t, size_t>> matches;
      if (re_) {
        re_->ForEachMatch(p, [&](size_t b, size_t e) { matches.emplace_back(b, e); });
      } else if (!literal_.empty()) {
        for (size_t pos = p.find(literal_); pos != std::string::npos; pos = p.find(literal_, pos + literal_.size())) {
          matches.emplace_back(pos, pos + literal_.size());
        }
      }
      // (piece, is_match) in order.
      std::vector<std::pair<std::string, bool>> parts;
      size_t last = 0;
      for (auto [b, e] : matches) {
        if (b > last) parts.emplace_back(p.substr(last, b - last), false);
        parts.emplace_back(p.substr(b, e - b), true);
        last = e;
      }
      if (last < p.size()) parts.emplace_back(p.substr(last), false);
      if (invert_) {
        for (auto& part : parts) part.second = !part.second;
      }
      if (behavior_ == "Removed") {
        for (auto& [s, m] : parts) if (!m) out.push_back(s);
      } else if (behavior_ == "MergedWithPrevious") {
        std::string cur;
        for (auto& [s, m] : parts) {
          if (m && !cur.empty()) {
            out.push_back(cur + s);
            cur.clear();
          } else {
            if (!cur.empty()) out.push_back(cur);
            cur = s;
          }
        }
        if (!cur.empty()) out.push_back(cur);
      } else if (behavior_ == "MergedWithNext") {
        std::string cur;
        for (auto& [s, m] : parts) {
          cur += s;
          if (!m) {
            out.push_back(cur);
            cur.clear();
          }
        }
        if (!cur.empty()) out.push_back(cur);
      } else {  // Isolated (and Contiguous, treated alike)
        for (auto& [s, m] : parts) out.push_back(s);
      }
    }
    pieces.swap(out);
  }

 private:
  std::shared_ptr<Regex> re_;
  std::string literal_;
  std::string behavior_;
  bool invert_;
};

class ByteLevelStep : public Step {
 public:
  ByteLevelStep(std::shared_ptr<Regex> gpt2, bool add_prefix_space)
      : gpt2_(std::move(gpt2)), add_prefix_space_(add_prefix_space) {}
  void Apply(std::vector<std::string>& pieces, bool first) const override {
    std::vector<std::string> out;
    for (size_t k = 0; k < pieces.size(); ++k) {
      std::string p = pieces[k];
      if (add_prefix_space_ && k == 0 && first && !p.empty() && p[0] != ' ') p = " " + p;
      if (gpt2_) {
        // Isolated split: text between matches (invalid UTF-8) stays too.
        size_t last = 0;
        gpt2_->ForEachMatch(p, [&](size_t b, size_t e) {
          if (b > last) out.push_back(BytesToByteLevel(p.substr(last, b - last)));
          out.push_back(BytesToByteLevel(p.substr(b, e - b)));
          last = e;
        });
        if (last < p.size()) out.push_back(BytesToByteLevel(p.substr(last)));
      } else {
        out.push_back(BytesToByteLevel(p));
      }
    }
    pieces.swap(out);
  }

 private:
  std::shared_ptr<Regex> gpt2_;
  bool add_prefix_space_;
};

class MetaspaceStep : public Step {
 public:
  MetaspaceStep(std::string replacement, std::string scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(std::move(scheme)), split_(split) {}
  void Apply(std::vector<std::string>& pieces, bool first) const override {
    std::vector<std::string> out;
    for (size_t k = 0; k < pieces.size(); ++k) {
      std::string p = ReplaceAll(pieces[k], " ", replacement_);
      const bool prepend = scheme_ == "always" || (scheme_ == "first" && first && k == 0);
      if (prepend && p.compare(0, replacement_.size(), replacement_) != 0) p = replacement_ + p;
      if (!split_) {
        out.push_back(p);
        continue;
      }
      // Each piece starts at a replacement character.
      size_t start = 0;
      for (size_t pos = p.find(replacement_, 1); pos != std::string::npos; pos = p.find(replacement_, pos + 1)) {
        out.push_back(p.substr(start, pos - start));
        start = pos;
      }
      out.push_back(p.substr(start));
    }
    pieces.swap(out);
  }

 private:
  std::string replacement_, scheme_;
  bool split_;
};

// Normalizers act on the whole stretch of text.
using Normalize = std::function<std::string(std::string)>;

absl::StatusOr<Normalize> MakeNormalizer(const Json& n, std::string_view source) {
  if (n.is_null()) return Normalize([](std::string s) { return s; });
  const std::string type = n.value("type", std::string());
  if (type == "Sequence") {
    std::vector<Normalize> steps;
    for (const Json& sub : n.value("normalizers", Json::array())) {
      auto step = MakeNormalizer(sub, source);
      if (!step.ok()) return step.status();
      steps.push_back(*step);
    }
    return Normalize([steps](std::string s) {
      for (const auto& f : steps) s = f(std::move(s));
      return s;
    });
  }
  if (type == "Prepend") {
    const std::string prefix = n.value("prepend", std::string());
    return Normalize([prefix](std::string s) { return s.empty() ? s : prefix + s; });
  }
  if (type == "Replace") {
    const Json& pattern = n["pattern"];
    if (!pattern.contains("String")) {
      return absl::UnimplementedError(absl::StrCat(std::string(source), ": normalizer Replace supports String patterns only"));
    }
    const std::string from = pattern["String"].get<std::string>(), to = n.value("content", std::string());
    return Normalize([from, to](std::string s) { return ReplaceAll(std::move(s), from, to); });
  }
  if (type == "NFC" || type == "NFKC") {
    const bool compat = type == "NFKC";
    return Normalize([compat](std::string s) {
      UErrorCode err = U_ZERO_ERROR;
      const icu::Normalizer2* norm =
          compat ? icu::Normalizer2::getNFKCInstance(err) : icu::Normalizer2::getNFCInstance(err);
      if (U_FAILURE(err)) return s;
      icu::UnicodeString out = norm->normalize(icu::UnicodeString::fromUTF8(s), err);
      if (U_FAILURE(err)) return s;
      std::string result;
      out.toUTF8String(result);
      return result;
    });
  }
  return absl::UnimplementedError(absl::StrCat(std::string(source), ": normalizer type '", type, "' is not supported"));
}

const char kGpt2Pattern[] = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

absl::Status AddSteps(const Json& p, std::string_view source, std::vector<std::unique_ptr<Step>>* steps) {
  if (p.is_null()) return absl::OkStatus();
  const std::string type = p.value("type", std::string());
  if (type == "Sequence") {
    for (const Json& sub : p.value("pretokenizers", Json::array())) {
      absl::Status s = AddSteps(sub, source, steps);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (type == "Split") {
    const Json& pattern = p["pattern"];
    std::shared_ptr<Regex> re;
    std::string literal;
    if (pattern.contains("Regex")) {
      auto r = Regex::Compile(pattern["Regex"].get<std::string>(), source);
      if (!r.ok()) return r.status();
      re = *r;
    } else if (pattern.contains("String")) {
      literal = pattern["String"].get<std::string>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat(std::string(source), ": Split pre_tokenizer has no pattern"));
    }
    steps->push_back(std::make_unique<SplitStep>(re, literal, p.value("behavior", std::string("Isolated")),
                                                 p.value("invert", false)));
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    std::shared_ptr<Regex> gpt2;
    if (p.value("use_regex", true)) {
      auto r = Regex::Compile(kGpt2Pattern, source);
      if (!r.ok()) return r.status();
      gpt2 = *r;
    }
    steps->push_back(std::make_unique<ByteLevelStep>(gpt2, p.value("add_prefix_space", false)));
    return absl::OkStatus();
  }
  if (type == "Metaspace") {
    std::string scheme = p.value("prepend_scheme", std::string());
    if (scheme.empty()) scheme = p.value("add_prefix_space", true) ? "always" : "never";
    steps->push_back(std::make_unique<MetaspaceStep>(p.value("replacement", kMetaspace), scheme, p.value("split", true)));
    return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrCat(std::string(source), ": pre_tokenizer type '", type, "' is not supported"));
}

class PipelineSplitter final : public TextSplitter {
 public:
  PipelineSplitter(Normalize normalize, std::vector<std::unique_ptr<Step>> steps)
      : normalize_(std::move(normalize)), steps_(std::move(steps)) {}
  std::vector<std::string> Split(std::string_view text, bool first) const override {
    std::vector<std::string> pieces = {normalize_(std::string(text))};
    for (const auto& s : steps_) s->Apply(pieces, first);
    std::erase_if(pieces, [](const std::string& p) { return p.empty(); });
    return pieces;
  }

 private:
  Normalize normalize_;
  std::vector<std::unique_ptr<Step>> steps_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TextSplitter>> TextSplitter::FromJson(const Json& normalizer,
                                                                     const Json& pre_tokenizer,
                                                                     std::string_view source) {
  auto normalize = MakeNormalizer(normalizer, source);
  if (!normalize.ok()) return normalize.status();
  std::vector<std::unique_ptr<Step>> steps;
  absl::Status s = AddSteps(pre_tokenizer, source, &steps);
  if (!s.ok()) return s;
  return std::unique_ptr<TextSplitter>(new PipelineSplitter(*normalize, std::move(steps)));
}

}  // namespace tandem
