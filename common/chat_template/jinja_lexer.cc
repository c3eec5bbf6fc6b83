#include "common/chat_template/jinja_lexer.h"

#include <cctype>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tandem::jinja {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool IsNameStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsNameChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

class Lexer {
 public:
  explicit Lexer(std::string_view source) : src_(source) {
    // keep_trailing_newline=False: a single trailing newline is dropped.
    if (!src_.empty() && src_.back() == '\n') src_.remove_suffix(1);
  }

  absl::StatusOr<std::vector<Token>> Run() {
    size_t pos = 0;
    // How the text after the previous tag starts: strip all whitespace
    // (`-%}`), or one newline (trim_blocks after a block or comment tag).
    enum class Lead { kKeep, kStripAll, kStripNewline } lead = Lead::kKeep;
    while (pos <= src_.size()) {
      size_t tag = FindTag(pos);
      size_t text_begin = pos;
      size_t text_end = tag == std::string_view::npos ? src_.size() : tag;
      if (lead == Lead::kStripAll) {
        while (text_begin < text_end && IsSpace(src_[text_begin])) ++text_begin;
      } else if (lead == Lead::kStripNewline && text_begin < text_end && src_[text_begin] == '\n') {
        ++text_begin;
      }
      if (tag == std::string_view::npos) {
        Emit(TokenKind::kText, std::string(src_.substr(text_begin, text_end - text_begin)));
        break;
      }
      const char type = src_[tag + 1];
      const char modifier = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (modifier == '-') {
        while (text_end > text_begin && IsSpace(src_[text_end - 1])) --text_end;
      } else if (type != '{' && modifier != '+') {
        // lstrip_blocks: only spaces/tabs between the line start and the tag.
        size_t line_start = text_end;
        while (line_start > text_begin && (src_[line_start - 1] == ' ' || src_[line_start - 1] == '\t')) --line_start;
        if (line_start == 0 || src_[line_start - 1] == '\n') text_end = line_start;
      }
      Emit(TokenKind::kText, std::string(src_.substr(text_begin, text_end - text_begin)));
      line_ += Count(pos, tag, '\n');
      pos = tag + 2 + ((modifier == '-' || modifier == '+') ? 1 : 0);
      bool strip_after = false;
      if (type == '#') {
        size_t close = src_.find("#}", pos);
        if (close == std::string_view::npos) return Error("unterminated comment");
        strip_after = close > pos && src_[close - 1] == '-';
        line_ += Count(pos, close, '\n');
        pos = close + 2;
        lead = strip_after ? Lead::kStripAll : Lead::kStripNewline;
        continue;
      }
      Emit(type == '{' ? TokenKind::kExprBegin : TokenKind::kStmtBegin, "");
      absl::StatusOr<size_t> end = LexTagBody(pos, type, &strip_after);
      if (!end.ok()) return end.status();
      Emit(type == '{' ? TokenKind::kExprEnd : TokenKind::kStmtEnd, "");
      pos = *end;
      lead = strip_after ? Lead::kStripAll : (type == '%' ? Lead::kStripNewline : Lead::kKeep);
    }
    Emit(TokenKind::kEnd, "");
    return std::move(tokens_);
  }

 private:
  size_t FindTag(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string_view::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return std::string_view::npos;
  }

  int Count(size_t begin, size_t end, char c) const {
    int n = 0;
    for (size_t i = begin; i < end && i < src_.size(); ++i) n += src_[i] == c;
    return n;
  }

  void Emit(TokenKind kind, std::string text) {
    if (kind == TokenKind::kText && text.empty()) return;
    tokens_.push_back(Token{kind, std::move(text), 0, 0, line_});
  }

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("template line ", line_, ": ", what));
  }

  // Lexes the inside of `{{ ... }}` or `{% ... %}` from pos; returns the
  // position after the closing delimiter.
  absl::StatusOr<size_t> LexTagBody(size_t pos, char type, bool* strip_after) {
    const char closer = type == '{' ? '}' : '%';
    int brace_depth = 0;  // `{` of dict literals inside `{{ }}`
    while (true) {
      while (pos < src_.size() && IsSpace(src_[pos])) {
        if (src_[pos] == '\n') ++line_;
        ++pos;
      }
      if (pos >= src_.size()) return Error("unterminated tag");
      const char c = src_[pos];
      auto at = [&](std::string_view s) { return src_.substr(pos, s.size()) == s; };
      if (brace_depth == 0) {
        if (c == '-' && pos + 2 < src_.size() + 0 && src_[pos + 1] == closer && pos + 2 < src_.size() &&
            src_[pos + 2] == '}') {
          *strip_after = true;
          return pos + 3;
        }
        if (c == closer && pos + 1 < src_.size() && src_[pos + 1] == '}') return pos + 2;
      }
      if (IsNameStart(c)) {
        size_t end = pos;
        while (end < src_.size() && IsNameChar(src_[end])) ++end;
        Emit(TokenKind::kName, std::string(src_.substr(pos, end - pos)));
        pos = end;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t end = pos;
        while (end < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[end])) || src_[end] == '_')) ++end;
        bool is_float = false;
        if (end + 1 < src_.size() && src_[end] == '.' && std::isdigit(static_cast<unsigned char>(src_[end + 1]))) {
          is_float = true;
          ++end;
          while (end < src_.size() && std::isdigit(static_cast<unsigned char>(src_[end]))) ++end;
        }
        std::string digits;
        for (size_t i = pos; i < end; ++i) {
          if (src_[i] != '_') digits.push_back(src_[i]);
        }
        Token t{is_float ? TokenKind::kFloat : TokenKind::kInt, digits, 0, 0, line_};
        if (is_float) {
          t.float_value = std::strtod(digits.c_str(), nullptr);
        } else {
          t.int_value = std::strtoll(digits.c_str(), nullptr, 10);
        }
        tokens_.push_back(std::move(t));
        pos = end;
      } else if (c == '"' || c == '\'') {
        absl::StatusOr<size_t> end = LexString(pos);
        if (!end.ok()) return end.status();
        pos = *end;
      } else {
        static constexpr std::string_view kTwoChar[] = {"==", "!=", "<=", ">=", "//", "**"};
        std::string op(1, c);
        for (std::string_view two : kTwoChar) {
          if (at(two)) op = std::string(two);
        }
        if (op.size() == 1 && std::string_view("+-*/%~|.,:()[]{}=<>").find(c) == std::string_view::npos) {
          return Error(absl::StrCat("unexpected character '", std::string(1, c), "'"));
        }
        if (c == '{') ++brace_depth;
        if (c == '}') --brace_depth;
        Emit(TokenKind::kOperator, op);
        pos += op.size();
      }
    }
  }

  absl::StatusOr<size_t> LexString(size_t pos) {
    const char quote = src_[pos++];
    std::string value;
    while (pos < src_.size() && src_[pos] != quote) {
      char c = src_[pos++];
      if (c == '\n') ++line_;
      if (c != '\\' || pos >= src_.size()) {
        value.push_back(c);
        continue;
      }
      const char e = src_[pos++];
      switch (e) {
        case 'n':
          value.push_back('\n');
          break;
        case 't':
          value.push_back('\t');
          break;
        case 'r':
          value.push_back('\r');
          break;
        case '\\':
        case '\'':
        case '"':
          value.push_back(e);
          break;
        case '\n':
          break;  // line continuation
        default:
          // Python keeps unknown escapes as written.
          value.push_back('\\');
          value.push_back(e);
      }
    }
    if (pos >= src_.size()) return Error("unterminated string");
    tokens_.push_back(Token{TokenKind::kString, std::move(value), 0, 0, line_});
    return pos + 1;
  }

  std::string_view src_;
  std::vector<Token> tokens_;
  int line_ = 1;
};

}  // namespace

absl::StatusOr<std::vector<Token>> Lex(std::string_view source) { return Lexer(source).Run(); }

}  // namespace tandem::jinja
