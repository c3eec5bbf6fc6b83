// Jinja interpreter: walks a parsed Template with a set of global
// variables and returns the rendered text. Scoping follows Jinja: a for
// loop body gets a fresh scope each iteration (so `{% set %}` inside a loop
// does not leak out; templates use namespace() for that), if blocks do not
// open one, macros see the globals and their arguments. Stateless between
// calls; one Render call runs on the calling thread only.
#ifndef TANDEM_COMMON_CHAT_TEMPLATE_JINJA_INTERPRETER_H_
#define TANDEM_COMMON_CHAT_TEMPLATE_JINJA_INTERPRETER_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/chat_template/jinja_ast.h"
#include "common/chat_template/jinja_value.h"

namespace tandem::jinja {

// INVALID_ARGUMENT for raise_exception (its message) and for type errors at
// render time (e.g. adding a string to a list).
absl::StatusOr<std::string> Render(const Template& tmpl, const Object& globals);

}  // namespace tandem::jinja

#endif  // TANDEM_COMMON_CHAT_TEMPLATE_JINJA_INTERPRETER_H_
