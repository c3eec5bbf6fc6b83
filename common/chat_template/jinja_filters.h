// Jinja's built-in filters (`x | trim`), tests (`x is defined`) and the
// Python methods chat templates call on strings and dicts (`s.strip()`,
// `d.items()`), with the semantics of Jinja2 + Python that transformers
// renders with. The Is* predicates are what the parser checks so that a
// template using anything else is refused at load.
#ifndef TANDEM_COMMON_CHAT_TEMPLATE_JINJA_FILTERS_H_
#define TANDEM_COMMON_CHAT_TEMPLATE_JINJA_FILTERS_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/chat_template/jinja_value.h"

namespace tandem::jinja {

bool IsKnownFilter(std::string_view name);
bool IsKnownTest(std::string_view name);
bool IsKnownMethod(std::string_view name);
// Functions the interpreter defines globally (raise_exception, namespace,
// range, strftime_now); macros are the template's own.
bool IsKnownGlobalFunction(std::string_view name);

// Errors are INVALID_ARGUMENT naming the filter/test/method and the types.
absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& input, const CallArgs& args);
absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& input, const CallArgs& args);
absl::StatusOr<Value> CallMethod(const Value& object, const std::string& name, const CallArgs& args);

}  // namespace tandem::jinja

#endif  // TANDEM_COMMON_CHAT_TEMPLATE_JINJA_FILTERS_H_
