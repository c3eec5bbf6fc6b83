// Jinja parser: tokens -> Template (jinja_ast.h), with Jinja2's operator
// precedence. Everything the interpreter cannot run is refused here, so a
// template either loads whole or not at all: unknown statements
// (include, extends, call, ...), filters, tests, methods and global
// functions are UNIMPLEMENTED naming the construct and its line; syntax
// errors are INVALID_ARGUMENT.
#ifndef TANDEM_COMMON_CHAT_TEMPLATE_JINJA_PARSER_H_
#define TANDEM_COMMON_CHAT_TEMPLATE_JINJA_PARSER_H_

#include <memory>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "common/chat_template/jinja_ast.h"

namespace tandem::jinja {

absl::StatusOr<std::unique_ptr<Template>> Parse(absl::string_view source);

}  // namespace tandem::jinja

#endif  // TANDEM_COMMON_CHAT_TEMPLATE_JINJA_PARSER_H_
