#include "common/chat_template/jinja_value.h"

#include <charconv>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tandem::jinja {

const Value* Object::Find(const std::string& key) const {
  for (const auto& [k, v] : entries) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Object::Set(const std::string& key, Value value) {
  for (auto& [k, v] : entries) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  entries.emplace_back(key, std::move(value));
}

const Value* CallArgs::Get(size_t index, const std::string& name) const {
  for (const auto& [k, v] : keyword) {
    if (k == name) return &v;
  }
  return index < positional.size() ? &positional[index] : nullptr;
}

Value Value::None() {
  Value v;
  v.data_ = nullptr;
  return v;
}
Value Value::Bool(bool b) {
  Value v;
  v.data_ = b;
  return v;
}
Value Value::Int(int64_t i) {
  Value v;
  v.data_ = i;
  return v;
}
Value Value::Float(double d) {
  Value v;
  v.data_ = d;
  return v;
}
Value Value::String(std::string s) {
  Value v;
  v.data_ = std::move(s);
  return v;
}
Value Value::MakeArray(Array items) {
  Value v;
  v.data_ = std::make_shared<const Array>(std::move(items));
  return v;
}
Value Value::MakeObject(Object object) {
  Value v;
  v.data_ = std::make_shared<Object>(std::move(object));
  return v;
}
Value Value::MakeFunction(Function f) {
  Value v;
  v.data_ = std::make_shared<const Function>(std::move(f));
  return v;
}

namespace {

template <typename Json>
Value ValueFromJson(const Json& json);

}  // namespace

Value Value::FromJson(const nlohmann::json& json) { return ValueFromJson(json); }
Value Value::FromJson(const nlohmann::ordered_json& json) { return ValueFromJson(json); }

namespace {

template <typename Json>
Value ValueFromJson(const Json& json) {
  switch (json.type()) {
    case nlohmann::json::value_t::null:
      return Value::None();
    case nlohmann::json::value_t::boolean:
      return Value::Bool(json.template get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value::Int(json.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned:
      return Value::Int(static_cast<int64_t>(json.template get<uint64_t>()));
    case nlohmann::json::value_t::number_float:
      return Value::Float(json.template get<double>());
    case nlohmann::json::value_t::string:
      return Value::String(json.template get<std::string>());
    case nlohmann::json::value_t::array: {
      Array items;
      items.reserve(json.size());
      for (const auto& item : json) items.push_back(ValueFromJson(item));
      return Value::MakeArray(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      Object object;
      for (auto it = json.begin(); it != json.end(); ++it) {
        object.entries.emplace_back(it.key(), ValueFromJson(it.value()));
      }
      return Value::MakeObject(std::move(object));
    }
    default:
      return Value();
  }
}

}  // namespace

bool Value::Truthy() const {
  switch (kind()) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return as_bool();
    case Kind::kInt:
      return as_int() != 0;
    case Kind::kFloat:
      return as_number() != 0.0;
    case Kind::kString:
      return !as_string().empty();
    case Kind::kArray:
      return !as_array().empty();
    case Kind::kObject:
      return as_object().is_namespace || !as_object().entries.empty();
    case Kind::kFunction:
      return true;
  }
  return false;
}

namespace {

// Python's repr(float): the shortest round-tripping digits, always with a
// '.' or an exponent.
std::string FloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d);
  std::string s(buf, end);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

void AppendJsonString(const std::string& s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          snprintf(buf, sizeof buf, "\\u%04x", c);
          out->append(buf);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

void AppendJson(const Value& v, int indent, int depth, std::string* out) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
    case Value::Kind::kFunction:
      out->append("null");
      return;
    case Value::Kind::kBool:
      out->append(v.as_bool() ? "true" : "false");
      return;
    case Value::Kind::kInt:
      out->append(std::to_string(v.as_int()));
      return;
    case Value::Kind::kFloat:
      out->append(FloatRepr(v.as_number()));
      return;
    case Value::Kind::kString:
      AppendJsonString(v.as_string(), out);
      return;
    case Value::Kind::kArray:
    case Value::Kind::kObject:
      break;
  }
  const bool is_array = v.is_array();
  const size_t n = is_array ? v.as_array().size() : v.as_object().entries.size();
  out->push_back(is_array ? '[' : '{');
  if (n == 0) {
    out->push_back(is_array ? ']' : '}');
    return;
  }
  const std::string child_pad = indent > 0 ? "\n" + std::string(static_cast<size_t>(indent) * (depth + 1), ' ') : "";
  for (size_t i = 0; i < n; ++i) {
    if (i > 0) out->append(indent > 0 ? "," : ", ");
    out->append(child_pad);
    if (is_array) {
      AppendJson(v.as_array()[i], indent, depth + 1, out);
    } else {
      const auto& [key, value] = v.as_object().entries[i];
      AppendJsonString(key, out);
      out->append(": ");
      AppendJson(value, indent, depth + 1, out);
    }
  }
  if (indent > 0) out->append("\n" + std::string(static_cast<size_t>(indent) * depth, ' '));
  out->push_back(is_array ? ']' : '}');
}

}  // namespace

std::string Value::ToString() const {
  switch (kind()) {
    case Kind::kUndefined:
      return "";
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return as_bool() ? "True" : "False";
    case Kind::kInt:
      return std::to_string(as_int());
    case Kind::kFloat:
      return FloatRepr(as_number());
    case Kind::kString:
      return as_string();
    case Kind::kArray: {
      std::string out = "[";
      for (size_t i = 0; i < as_array().size(); ++i) absl::StrAppend(&out, i ? ", " : "", as_array()[i].Repr());
      return out + "]";
    }
    case Kind::kObject: {
      std::string out = as_object().is_namespace ? "<Namespace {" : "{";
      for (size_t i = 0; i < as_object().entries.size(); ++i) {
        const auto& [k, v] = as_object().entries[i];
        absl::StrAppend(&out, i ? ", " : "", Value::String(k).Repr(), ": ", v.Repr());
      }
      return out + (as_object().is_namespace ? "}>" : "}");
    }
    case Kind::kFunction:
      return "<function>";
  }
  return "";
}

std::string Value::Repr() const {
  if (!is_string()) return is_undefined() ? "Undefined" : ToString();
  const std::string& s = as_string();
  const char quote = (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
  std::string out(1, quote);
  for (char c : s) {
    if (c == quote || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out.append("\\n");
    } else if (c == '\r') {
      out.append("\\r");
    } else if (c == '\t') {
      out.append("\\t");
    } else {
      out.push_back(c);
    }
  }
  out.push_back(quote);
  return out;
}

std::string Value::ToJson(int indent) const {
  std::string out;
  AppendJson(*this, indent, 0, &out);
  return out;
}

const char* Value::TypeName() const {
  switch (kind()) {
    case Kind::kUndefined:
      return "undefined";
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "string";
    case Kind::kArray:
      return "list";
    case Kind::kObject:
      return as_object().is_namespace ? "namespace" : "dict";
    case Kind::kFunction:
      return "function";
  }
  return "?";
}

bool operator==(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_int() && b.is_int()) return a.as_int() == b.as_int();
    return a.as_number() == b.as_number();
  }
  // Python: True == 1, but templates compare booleans with booleans.
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kBool:
      return a.as_bool() == b.as_bool();
    case Value::Kind::kString:
      return a.as_string() == b.as_string();
    case Value::Kind::kArray:
      return a.as_array() == b.as_array();
    case Value::Kind::kObject: {
      const auto& x = a.as_object().entries;
      const auto& y = b.as_object().entries;
      if (x.size() != y.size()) return false;
      for (const auto& [k, v] : x) {
        const Value* other = b.as_object().Find(k);
        if (other == nullptr || !(*other == v)) return false;
      }
      return true;
    }
    default:
      return false;
  }
}

absl::StatusOr<bool> LessThan(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) return a.as_number() < b.as_number();
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();
  return absl::InvalidArgumentError(
      absl::StrCat("'<' not supported between instances of '", a.TypeName(), "' and '", b.TypeName(), "'"));
}

absl::StatusOr<bool> Contains(const Value& haystack, const Value& needle) {
  if (haystack.is_string()) {
    if (!needle.is_string()) return absl::InvalidArgumentError("'in <string>' requires a string as left operand");
    return haystack.as_string().find(needle.as_string()) != std::string::npos;
  }
  if (haystack.is_array()) {
    for (const Value& item : haystack.as_array()) {
      if (item == needle) return true;
    }
    return false;
  }
  if (haystack.is_object()) return needle.is_string() && haystack.as_object().Find(needle.as_string()) != nullptr;
  if (haystack.is_undefined()) return false;
  return absl::InvalidArgumentError(absl::StrCat("argument of type '", haystack.TypeName(), "' is not iterable"));
}

}  // namespace tandem::jinja
