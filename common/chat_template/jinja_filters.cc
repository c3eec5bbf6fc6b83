#include "common/chat_template/jinja_filters.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"

namespace tandem::jinja {
namespace {

using NameSet = std::set<std::string, std::less<>>;

const NameSet& Filters() {
  static const auto* names = new NameSet{
      "abs",      "attr",   "capitalize", "count",  "d",       "default", "dictsort", "e",        "escape",
      "first",    "float",  "indent",     "int",    "items",   "join",    "last",     "length",   "list",
      "lower",    "map",    "max",        "min",    "reject",  "rejectattr", "replace", "reverse", "round",
      "safe",     "select", "selectattr", "sort",   "string",  "sum",     "title",    "tojson",   "trim",
      "unique",   "upper",  "wordcount"};
  return *names;
}

const NameSet& Tests() {
  static const auto* names = new NameSet{
      "boolean", "callable", "defined", "divisibleby", "eq",      "equalto", "even",    "false",  "float",
      "ge",      "gt",       "in",      "integer",     "iterable", "le",     "lower",   "lt",     "mapping",
      "ne",      "none",     "number",  "odd",         "sameas",  "sequence", "string", "true",   "undefined",
      "upper",   "==",       "!=",      "<",           "<=",      ">",       ">="};
  return *names;
}

absl::Status TypeError(const std::string& what, const Value& input) {
  return absl::InvalidArgumentError(absl::StrCat("filter '", what, "' cannot take a ", input.TypeName()));
}

// The items a filter iterates: a list's items, a dict's keys, a string's
// characters (bytes; chat templates do not iterate strings).
absl::StatusOr<Array> Items(const std::string& filter, const Value& input) {
  if (input.is_array()) return input.as_array();
  Array out;
  if (input.is_object()) {
    for (const auto& [k, v] : input.as_object().entries) out.push_back(Value::String(k));
    return out;
  }
  if (input.is_string()) {
    for (char c : input.as_string()) out.push_back(Value::String(std::string(1, c)));
    return out;
  }
  if (input.is_undefined()) return out;
  return TypeError(filter, input);
}

// item.attribute, with dotted paths ("function.name") and integer parts.
Value GetAttribute(const Value& item, const std::string& path) {
  Value current = item;
  size_t start = 0;
  while (start <= path.size()) {
    size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (current.is_object()) {
      const Value* v = current.as_object().Find(part);
      current = v ? *v : Value();
    } else if (current.is_array() && !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit)) {
      const size_t i = std::stoul(part);
      current = i < current.as_array().size() ? current.as_array()[i] : Value();
    } else {
      return Value();
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return current;
}

// The args after the first `skip` positional ones, for select/selectattr.
CallArgs Rest(const CallArgs& args, size_t skip) {
  CallArgs rest;
  for (size_t i = skip; i < args.positional.size(); ++i) rest.positional.push_back(args.positional[i]);
  return rest;
}

absl::StatusOr<Value> Compare3(const Value& a, const Value& b, bool* less) {
  TANDEM_ASSIGN_OR_RETURN(*less, LessThan(a, b));
  return Value();
}

absl::StatusOr<Value> Sorted(const Array& items, bool reverse, const Value* attribute, bool case_sensitive) {
  auto key = [&](const Value& v) {
    Value k = attribute != nullptr && attribute->is_string() ? GetAttribute(v, attribute->as_string()) : v;
    if (!case_sensitive && k.is_string()) {
      std::string s = k.as_string();
      for (char& c : s) c = std::tolower(static_cast<unsigned char>(c));
      return Value::String(s);
    }
    return k;
  };
  std::vector<std::pair<Value, Value>> keyed;
  for (const Value& v : items) keyed.emplace_back(key(v), v);
  absl::Status error;
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
    bool less = false;
    auto status = Compare3(reverse ? b.first : a.first, reverse ? a.first : b.first, &less);
    if (!status.ok() && error.ok()) error = status.status();
    return less;
  });
  if (!error.ok()) return error;
  Array out;
  for (auto& [k, v] : keyed) out.push_back(std::move(v));
  return Value::MakeArray(std::move(out));
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

bool Flag(const CallArgs& args, size_t index, const std::string& name, bool fallback) {
  const Value* v = args.Get(index, name);
  return v == nullptr ? fallback : v->Truthy();
}

}  // namespace

bool IsKnownFilter(std::string_view name) { return Filters().count(name) > 0; }
bool IsKnownTest(std::string_view name) { return Tests().count(name) > 0; }
bool IsKnownGlobalFunction(std::string_view name) {
  return name == "raise_exception" || name == "namespace" || name == "range" || name == "strftime_now";
}

absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& input, const CallArgs& args) {
  if (name == "default" || name == "d") {
    const Value* fallback = args.Get(0, "default_value");
    const bool use_fallback = Flag(args, 1, "boolean", false) ? !input.Truthy() : input.is_undefined();
    return use_fallback ? (fallback ? *fallback : Value::String("")) : input;
  }
  if (name == "tojson") {
    const Value* indent = args.Get(0, "indent");
    return Value::String(
        input.ToJson(indent != nullptr && indent->is_int() ? static_cast<int>(std::clamp<int64_t>(indent->as_int(), 0, 64)) : 0));
  }
  if (name == "string") return Value::String(input.ToString());
  if (name == "safe") return input;
  if (name == "e" || name == "escape") return Value::String(HtmlEscape(input.ToString()));
  if (name == "trim") {
    // Jinja's trim is str(value).strip(): None trims to "None".
    return CallMethod(Value::String(input.ToString()), "strip", args);
  }
  if (name == "lower" || name == "upper" || name == "title" || name == "capitalize") {
    return CallMethod(Value::String(input.ToString()), name, args);
  }
  if (name == "replace") {
    if (!input.is_string()) return TypeError(name, input);
    return CallMethod(input, "replace", args);
  }
  if (name == "wordcount") {
    TANDEM_ASSIGN_OR_RETURN(Value words, CallMethod(Value::String(input.ToString()), "split", CallArgs{}));
    return Value::Int(static_cast<int64_t>(words.as_array().size()));
  }
  if (name == "indent") {
    if (!input.is_string()) return TypeError(name, input);
    const Value* width = args.Get(0, "width");
    const int64_t spaces = width && width->is_int() ? std::clamp<int64_t>(width->as_int(), 0, 256) : 4;
    std::string pad = width && width->is_string() ? width->as_string() : std::string(spaces, ' ');
    const bool first = Flag(args, 1, "first", false);
    const bool blank = Flag(args, 2, "blank", false);
    std::string out;
    const std::string& s = input.as_string();
    size_t start = 0;
    bool is_first = true;
    while (start <= s.size()) {
      size_t nl = s.find('\n', start);
      std::string line = s.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
      if ((!is_first || first) && (blank || !line.empty())) out += pad;
      out += line;
      if (nl == std::string::npos) break;
      out += '\n';
      start = nl + 1;
      is_first = false;
    }
    return Value::String(std::move(out));
  }
  if (name == "length" || name == "count") {
    if (input.is_string()) {
      int64_t n = 0;  // code points, as Python's len()
      for (unsigned char c : input.as_string()) n += (c & 0xC0) != 0x80;
      return Value::Int(n);
    }
    if (input.is_array()) return Value::Int(static_cast<int64_t>(input.as_array().size()));
    if (input.is_object()) return Value::Int(static_cast<int64_t>(input.as_object().entries.size()));
    if (input.is_undefined()) return Value::Int(0);
    return TypeError(name, input);
  }
  if (name == "int") {
    if (input.is_int()) return input;
    if (input.is_float() && std::fabs(input.as_number()) < 9.2e18) return Value::Int(static_cast<int64_t>(input.as_number()));
    if (input.is_bool()) return Value::Int(input.as_bool());
    if (input.is_string()) {
      char* end = nullptr;
      long long v = std::strtoll(input.as_string().c_str(), &end, 10);
      if (end != input.as_string().c_str() && *end == '\0') return Value::Int(v);
    }
    const Value* fallback = args.Get(0, "default");
    return fallback ? *fallback : Value::Int(0);
  }
  if (name == "float") {
    if (input.is_number()) return Value::Float(input.as_number());
    if (input.is_string()) {
      char* end = nullptr;
      double v = std::strtod(input.as_string().c_str(), &end);
      if (end != input.as_string().c_str() && *end == '\0') return Value::Float(v);
    }
    const Value* fallback = args.Get(0, "default");
    return fallback ? *fallback : Value::Float(0);
  }
  if (name == "abs") {
    if (input.is_int() && input.as_int() != INT64_MIN) return Value::Int(std::llabs(input.as_int()));
    if (input.is_float()) return Value::Float(std::fabs(input.as_number()));
    return TypeError(name, input);
  }
  if (name == "round") {
    if (!input.is_number()) return TypeError(name, input);
    const Value* precision = args.Get(0, "precision");
    const double scale =
        std::pow(10.0, precision && precision->is_int() ? std::clamp<int64_t>(precision->as_int(), -30, 30) : 0);
    return Value::Float(std::round(input.as_number() * scale) / scale);
  }
  if (name == "items") {
    if (input.is_undefined()) return Value::MakeArray({});
    if (!input.is_object()) return TypeError(name, input);
    return CallMethod(input, "items", CallArgs{});
  }
  if (name == "dictsort") {
    if (!input.is_object()) return TypeError(name, input);
    TANDEM_ASSIGN_OR_RETURN(Value items, CallMethod(input, "items", CallArgs{}));
    Value first = Value::String("0");
    return Sorted(items.as_array(), Flag(args, 2, "reverse", false), &first, Flag(args, 0, "case_sensitive", false));
  }
  if (name == "attr") {
    const Value* attribute = args.Get(0, "name");
    return attribute && attribute->is_string() ? GetAttribute(input, attribute->as_string()) : Value();
  }
  // The rest iterate their input.
  TANDEM_ASSIGN_OR_RETURN(Array items, Items(name, input));
  if (name == "list") return Value::MakeArray(std::move(items));
  if (name == "first" || name == "last") {
    if (items.empty()) return Value();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "reverse") {
    if (input.is_string()) return Value::String(std::string(input.as_string().rbegin(), input.as_string().rend()));
    std::reverse(items.begin(), items.end());
    return Value::MakeArray(std::move(items));
  }
  if (name == "join") {
    const Value* sep = args.Get(0, "d");
    const Value* attribute = args.Get(1, "attribute");
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out += sep && sep->is_string() ? sep->as_string() : "";
      out += (attribute && attribute->is_string() ? GetAttribute(items[i], attribute->as_string()) : items[i]).ToString();
    }
    return Value::String(std::move(out));
  }
  if (name == "sort") {
    return Sorted(items, Flag(args, 0, "reverse", false), args.Get(2, "attribute"), Flag(args, 1, "case_sensitive", false));
  }
  if (name == "unique") {
    Array out;
    for (const Value& v : items) {
      if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
    }
    return Value::MakeArray(std::move(out));
  }
  if (name == "sum") {
    Value total = Value::Int(0);
    for (const Value& v : items) {
      if (!v.is_number()) return TypeError(name, v);
      total = total.is_int() && v.is_int() ? Value::Int(total.as_int() + v.as_int())
                                           : Value::Float(total.as_number() + v.as_number());
    }
    return total;
  }
  if (name == "min" || name == "max") {
    if (items.empty()) return Value();
    TANDEM_ASSIGN_OR_RETURN(Value sorted, Sorted(items, false, args.Get(1, "attribute"), Flag(args, 0, "case_sensitive", false)));
    return name == "min" ? sorted.as_array().front() : sorted.as_array().back();
  }
  if (name == "map") {
    Array out;
    const Value* attribute = args.Get(99, "attribute");
    for (const Value& v : items) {
      if (attribute != nullptr) {
        Value got = attribute->is_string() ? GetAttribute(v, attribute->as_string()) : Value();
        const Value* fallback = args.Get(99, "default");
        out.push_back(got.is_undefined() && fallback ? *fallback : got);
      } else if (!args.positional.empty() && args.positional[0].is_string()) {
        TANDEM_ASSIGN_OR_RETURN(Value mapped, ApplyFilter(args.positional[0].as_string(), v, Rest(args, 1)));
        out.push_back(std::move(mapped));
      } else {
        return absl::InvalidArgumentError("map needs a filter name or attribute=");
      }
    }
    return Value::MakeArray(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    const bool by_attr = name == "selectattr" || name == "rejectattr";
    const bool keep_if = name == "select" || name == "selectattr";
    const size_t test_index = by_attr ? 1 : 0;
    Array out;
    for (const Value& v : items) {
      Value subject = v;
      if (by_attr) {
        if (args.positional.empty() || !args.positional[0].is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(name, " needs an attribute name"));
        }
        subject = GetAttribute(v, args.positional[0].as_string());
      }
      bool passed = subject.Truthy();
      if (args.positional.size() > test_index) {
        if (!args.positional[test_index].is_string()) return absl::InvalidArgumentError(name + " needs a test name");
        const std::string& test = args.positional[test_index].as_string();
        if (!IsKnownTest(test)) return absl::UnimplementedError(absl::StrCat("test '", test, "' is not supported"));
        TANDEM_ASSIGN_OR_RETURN(passed, ApplyTest(test, subject, Rest(args, test_index + 1)));
      }
      if (passed == keep_if) out.push_back(v);
    }
    return Value::MakeArray(std::move(out));
  }
  return absl::UnimplementedError(absl::StrCat("filter '", name, "' is not supported"));
}

absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& input, const CallArgs& args) {
  const Value* arg = args.Get(0, "other");
  const Value none = Value::None();
  const Value& other = arg ? *arg : none;
  if (name == "defined") return !input.is_undefined();
  if (name == "undefined") return input.is_undefined();
  if (name == "none") return input.is_none();
  if (name == "string") return input.is_string();
  if (name == "number") return input.is_number();
  if (name == "integer") return input.is_int();
  if (name == "float") return input.is_float();
  if (name == "boolean") return input.is_bool();
  if (name == "true") return input.is_bool() && input.as_bool();
  if (name == "false") return input.is_bool() && !input.as_bool();
  if (name == "mapping") return input.is_object();
  if (name == "iterable") return input.is_array() || input.is_object() || input.is_string();
  if (name == "sequence") return input.is_array() || input.is_object() || input.is_string();
  if (name == "callable") return input.is_function();
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!input.is_int()) return absl::InvalidArgumentError(absl::StrCat("test '", name, "' needs an integer"));
    if (name == "divisibleby") {
      if (!other.is_int() || other.as_int() == 0) return absl::InvalidArgumentError("divisibleby needs a nonzero int");
      return input.as_int() % other.as_int() == 0;
    }
    return (input.as_int() % 2 != 0) == (name == "odd");
  }
  if (name == "lower" || name == "upper") {
    if (!input.is_string()) return false;
    for (char c : input.as_string()) {
      if (name == "lower" ? std::isupper(static_cast<unsigned char>(c)) : std::islower(static_cast<unsigned char>(c))) {
        return false;
      }
    }
    return true;
  }
  if (name == "eq" || name == "equalto" || name == "==") return input == other;
  if (name == "ne" || name == "!=") return !(input == other);
  if (name == "sameas") {
    if (input.kind() != other.kind()) return false;
    if (input.is_bool()) return input.as_bool() == other.as_bool();
    return input.is_none() || input.is_undefined();
  }
  if (name == "lt" || name == "<") return LessThan(input, other);
  if (name == "gt" || name == ">") return LessThan(other, input);
  if (name == "le" || name == "<=") {
    TANDEM_ASSIGN_OR_RETURN(bool greater, LessThan(other, input));
    return !greater;
  }
  if (name == "ge" || name == ">=") {
    TANDEM_ASSIGN_OR_RETURN(bool less, LessThan(input, other));
    return !less;
  }
  if (name == "in") return Contains(other, input);
  return absl::UnimplementedError(absl::StrCat("test '", name, "' is not supported"));
}

}  // namespace tandem::jinja
