// jinja::Value: what a Jinja expression evaluates to, with Python's
// semantics where chat templates depend on them (truthiness, str(), ==,
// ordering, `in`). Lists are immutable once built (the sandbox HF renders
// in forbids mutating them); objects keep insertion order; the only mutable
// value is a namespace(), shared by reference like in Jinja.
#ifndef TANDEM_COMMON_CHAT_TEMPLATE_JINJA_VALUE_H_
#define TANDEM_COMMON_CHAT_TEMPLATE_JINJA_VALUE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tandem::jinja {

class Value;
using Array = std::vector<Value>;

// An ordered string-keyed map (Python dicts keep insertion order; chat
// templates are small, so lookups are linear).
struct Object {
  std::vector<std::pair<std::string, Value>> entries;
  bool is_namespace = false;

  const Value* Find(const std::string& key) const;
  void Set(const std::string& key, Value value);
};

// Arguments of a call: positional, then keyword (`tojson(indent=4)`).
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;

  // The argument named `name`, else positional `index`, else nullptr.
  const Value* Get(size_t index, const std::string& name) const;
};

using Function = std::function<absl::StatusOr<Value>(const CallArgs&)>;

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kArray, kObject, kFunction };

  Value() = default;  // undefined
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double d);
  static Value String(std::string s);
  static Value MakeArray(Array items);
  static Value MakeObject(Object object);
  static Value MakeFunction(Function f);
  static Value FromJson(const nlohmann::json& json);
  // Keeps the objects' key order (nlohmann::json sorts keys).
  static Value FromJson(const nlohmann::ordered_json& json);

  Kind kind() const { return static_cast<Kind>(data_.index()); }
  bool is_undefined() const { return kind() == Kind::kUndefined; }
  bool is_none() const { return kind() == Kind::kNone; }
  bool is_bool() const { return kind() == Kind::kBool; }
  bool is_int() const { return kind() == Kind::kInt; }
  bool is_float() const { return kind() == Kind::kFloat; }
  bool is_number() const { return is_int() || is_float(); }
  bool is_string() const { return kind() == Kind::kString; }
  bool is_array() const { return kind() == Kind::kArray; }
  bool is_object() const { return kind() == Kind::kObject; }
  bool is_function() const { return kind() == Kind::kFunction; }

  bool as_bool() const { return std::get<bool>(data_); }
  int64_t as_int() const { return std::get<int64_t>(data_); }
  double as_number() const { return is_int() ? static_cast<double>(as_int()) : std::get<double>(data_); }
  const std::string& as_string() const { return std::get<std::string>(data_); }
  const Array& as_array() const { return *std::get<std::shared_ptr<const Array>>(data_); }
  const Object& as_object() const { return *std::get<std::shared_ptr<Object>>(data_); }
  // Only namespaces are written through this (`{% set ns.x = ... %}`).
  Object& mutable_object() const { return *std::get<std::shared_ptr<Object>>(data_); }
  const Function& as_function() const { return *std::get<std::shared_ptr<const Function>>(data_); }

  // Python truthiness: empty strings/lists/dicts, 0, None and undefined are false.
  bool Truthy() const;
  // str(value): what `{{ value }}` prints (undefined prints nothing).
  std::string ToString() const;
  // Python repr, used for strings nested in lists/dicts.
  std::string Repr() const;
  // json.dumps(value, ensure_ascii=False, indent=indent) with Python's
  // separators: ", " and ": " inline, "," and ": " when indented.
  std::string ToJson(int indent) const;
  // A name for errors: "string", "list", "dict", ...
  const char* TypeName() const;

  friend bool operator==(const Value& a, const Value& b);

 private:
  std::variant<std::monostate, std::nullptr_t, bool, int64_t, double, std::string, std::shared_ptr<const Array>,
               std::shared_ptr<Object>, std::shared_ptr<const Function>>
      data_;
};

// Python's ordering for numbers and strings; INVALID_ARGUMENT for others.
absl::StatusOr<bool> LessThan(const Value& a, const Value& b);
// `needle in haystack`: substring, list membership or dict key.
absl::StatusOr<bool> Contains(const Value& haystack, const Value& needle);

}  // namespace tandem::jinja

#endif  // TANDEM_COMMON_CHAT_TEMPLATE_JINJA_VALUE_H_
