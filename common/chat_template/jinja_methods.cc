// Python methods on strings, dicts and lists that chat templates call
// (CallMethod in jinja_filters.h).
#include <algorithm>
#include <cctype>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/chat_template/jinja_filters.h"

namespace tandem::jinja {
namespace {

const std::set<std::string, std::less<>>& StringMethods() {
  static const auto* names = new std::set<std::string, std::less<>>{
      "strip", "lstrip", "rstrip", "startswith", "endswith", "split", "upper", "lower", "title",
      "capitalize", "replace", "find", "count", "join", "splitlines", "isdigit", "isspace", "isalpha"};
  return *names;
}
const std::set<std::string, std::less<>>& DictMethods() {
  static const auto* names = new std::set<std::string, std::less<>>{"items", "keys", "values", "get"};
  return *names;
}

bool IsPySpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

absl::StatusOr<std::string> StringArg(const CallArgs& args, size_t index, const std::string& name,
                                      const std::string& method) {
  const Value* v = args.Get(index, name);
  if (v == nullptr || !v->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(method, "() takes a string argument"));
  }
  return v->as_string();
}

// str.strip/lstrip/rstrip: whitespace, or any of `chars` when given.
std::string Strip(const std::string& s, const Value* chars, bool left, bool right) {
  auto strip_char = [&](char c) {
    if (chars == nullptr || chars->is_none() || chars->is_undefined()) return IsPySpace(c);
    return chars->is_string() && chars->as_string().find(c) != std::string::npos;
  };
  size_t begin = 0, end = s.size();
  if (left) {
    while (begin < end && strip_char(s[begin])) ++begin;
  }
  if (right) {
    while (end > begin && strip_char(s[end - 1])) --end;
  }
  return s.substr(begin, end - begin);
}

Value Split(const std::string& s, const Value* sep, int64_t maxsplit) {
  Array parts;
  if (sep == nullptr || sep->is_none() || !sep->is_string()) {
    size_t i = 0;
    while (true) {
      while (i < s.size() && IsPySpace(s[i])) ++i;
      if (i >= s.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
        size_t end = s.size();
        while (end > i && IsPySpace(s[end - 1])) --end;
        parts.push_back(Value::String(s.substr(i, end - i)));
        break;
      }
      size_t j = i;
      while (j < s.size() && !IsPySpace(s[j])) ++j;
      parts.push_back(Value::String(s.substr(i, j - i)));
      i = j;
    }
    return Value::MakeArray(std::move(parts));
  }
  const std::string& d = sep->as_string();
  size_t start = 0;
  while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
    size_t at = d.empty() ? std::string::npos : s.find(d, start);
    if (at == std::string::npos) break;
    parts.push_back(Value::String(s.substr(start, at - start)));
    start = at + d.size();
  }
  parts.push_back(Value::String(s.substr(start)));
  return Value::MakeArray(std::move(parts));
}

std::string Title(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    const bool alpha = std::isalpha(static_cast<unsigned char>(c));
    if (alpha) c = prev_cased ? std::tolower(static_cast<unsigned char>(c)) : std::toupper(static_cast<unsigned char>(c));
    prev_cased = alpha;
  }
  return out;
}

std::string ReplaceAll(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  if (from.empty()) return s;
  std::string out;
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t at = s.find(from, start);
    if (at == std::string::npos) break;
    out.append(s, start, at - start).append(to);
    start = at + from.size();
    ++done;
  }
  return out.append(s, start, std::string::npos);
}

absl::StatusOr<Value> StringMethod(const std::string& s, const std::string& name, const CallArgs& args) {
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    return Value::String(Strip(s, args.Get(0, "chars"), name != "rstrip", name != "lstrip"));
  }
  if (name == "startswith" || name == "endswith") {
    const Value* arg = args.Get(0, "prefix");
    std::vector<std::string> options;
    if (arg != nullptr && arg->is_string()) {
      options.push_back(arg->as_string());
    } else if (arg != nullptr && arg->is_array()) {
      for (const Value& v : arg->as_array()) {
        if (v.is_string()) options.push_back(v.as_string());
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(name, "() takes a string or a tuple of strings"));
    }
    for (const std::string& o : options) {
      const bool hit = name == "startswith" ? s.compare(0, o.size(), o) == 0
                                            : s.size() >= o.size() && s.compare(s.size() - o.size(), o.size(), o) == 0;
      if (hit) return Value::Bool(true);
    }
    return Value::Bool(false);
  }
  if (name == "split") {
    const Value* maxsplit = args.Get(1, "maxsplit");
    return Split(s, args.Get(0, "sep"), maxsplit != nullptr && maxsplit->is_int() ? maxsplit->as_int() : -1);
  }
  if (name == "splitlines") {
    Array lines;
    size_t start = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\n' || s[i] == '\r') {
        lines.push_back(Value::String(s.substr(start, i - start)));
        if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
        start = i + 1;
      }
    }
    if (start < s.size()) lines.push_back(Value::String(s.substr(start)));
    return Value::MakeArray(std::move(lines));
  }
  if (name == "upper" || name == "lower") {
    std::string out = s;
    for (char& c : out) {
      c = name == "upper" ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c));
    }
    return Value::String(std::move(out));
  }
  if (name == "title") return Value::String(Title(s));
  if (name == "capitalize") {
    std::string out = s;
    for (size_t i = 0; i < out.size(); ++i) {
      out[i] = i == 0 ? std::toupper(static_cast<unsigned char>(out[i])) : std::tolower(static_cast<unsigned char>(out[i]));
    }
    return Value::String(std::move(out));
  }
  if (name == "replace") {
    auto from = StringArg(args, 0, "old", name);
    auto to = StringArg(args, 1, "new", name);
    if (!from.ok()) return from.status();
    if (!to.ok()) return to.status();
    const Value* count = args.Get(2, "count");
    return Value::String(ReplaceAll(s, *from, *to, count != nullptr && count->is_int() ? count->as_int() : -1));
  }
  if (name == "find" || name == "count") {
    auto sub = StringArg(args, 0, "sub", name);
    if (!sub.ok()) return sub.status();
    if (name == "find") {
      size_t at = s.find(*sub);
      return Value::Int(at == std::string::npos ? -1 : static_cast<int64_t>(at));
    }
    int64_t n = 0;
    for (size_t at = s.find(*sub); at != std::string::npos && !sub->empty(); at = s.find(*sub, at + sub->size())) ++n;
    return Value::Int(n);
  }
  if (name == "join") {
    const Value* items = args.Get(0, "iterable");
    if (items == nullptr || !items->is_array()) return absl::InvalidArgumentError("join() takes a list");
    std::string out;
    for (size_t i = 0; i < items->as_array().size(); ++i) {
      if (i) out += s;
      out += items->as_array()[i].ToString();
    }
    return Value::String(std::move(out));
  }
  if (name == "isdigit" || name == "isspace" || name == "isalpha") {
    if (s.empty()) return Value::Bool(false);
    for (char c : s) {
      const auto u = static_cast<unsigned char>(c);
      if ((name == "isdigit" && !std::isdigit(u)) || (name == "isspace" && !IsPySpace(c)) ||
          (name == "isalpha" && !std::isalpha(u))) {
        return Value::Bool(false);
      }
    }
    return Value::Bool(true);
  }
  return absl::InvalidArgumentError(absl::StrCat("'str' object has no method '", name, "'"));
}

absl::StatusOr<Value> DictMethod(const Object& object, const std::string& name, const CallArgs& args) {
  if (name == "get") {
    const Value* key = args.Get(0, "key");
    if (key == nullptr || !key->is_string()) return absl::InvalidArgumentError("get() takes a string key");
    if (const Value* v = object.Find(key->as_string())) return *v;
    const Value* fallback = args.Get(1, "default");
    return fallback != nullptr ? *fallback : Value::None();
  }
  Array out;
  for (const auto& [k, v] : object.entries) {
    if (name == "items") {
      out.push_back(Value::MakeArray({Value::String(k), v}));
    } else if (name == "keys") {
      out.push_back(Value::String(k));
    } else {
      out.push_back(v);
    }
  }
  return Value::MakeArray(std::move(out));
}

}  // namespace

bool IsKnownMethod(std::string_view name) {
  return StringMethods().count(name) > 0 || DictMethods().count(name) > 0;
}

absl::StatusOr<Value> CallMethod(const Value& object, const std::string& name, const CallArgs& args) {
  if (object.is_string() && StringMethods().count(name)) return StringMethod(object.as_string(), name, args);
  if (object.is_object() && !object.as_object().is_namespace && DictMethods().count(name)) {
    return DictMethod(object.as_object(), name, args);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'", object.TypeName(), "' object has no method '", name, "'"));
}

}  // namespace tandem::jinja
