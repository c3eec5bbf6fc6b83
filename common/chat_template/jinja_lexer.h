// Jinja lexer: template source -> tokens. Text between tags comes out with
// Jinja's whitespace control already applied, as transformers configures it
// (trim_blocks, lstrip_blocks, no trailing newline kept): `{%-`/`-%}` strip
// whitespace on their side, a block or comment tag eats the newline after
// it, and a block tag alone on its line eats the indentation before it.
#ifndef TANDEM_COMMON_CHAT_TEMPLATE_JINJA_LEXER_H_
#define TANDEM_COMMON_CHAT_TEMPLATE_JINJA_LEXER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem::jinja {

enum class TokenKind {
  kText,       // literal template text
  kExprBegin,  // {{
  kExprEnd,    // }}
  kStmtBegin,  // {%
  kStmtEnd,    // %}
  kName,
  kString,     // text holds the unescaped value
  kInt,
  kFloat,
  kOperator,   // text holds the operator: == != <= >= < > + - * / // % ** ~ | . , : ( ) [ ] { } =
  kEnd,
};

struct Token {
  TokenKind kind;
  std::string text;
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
};

// INVALID_ARGUMENT with the line for an unterminated tag, string or comment.
absl::StatusOr<std::vector<Token>> Lex(std::string_view source);

}  // namespace tandem::jinja

#endif  // TANDEM_COMMON_CHAT_TEMPLATE_JINJA_LEXER_H_
