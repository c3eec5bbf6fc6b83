#include "common/chat_template/jinja_interpreter.h"

#include <climits>
#include <cmath>
#include <ctime>
#include <map>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/chat_template/jinja_filters.h"
#include "common/util/status_macros.h"

namespace tandem::jinja {
namespace {

// Deeply nested templates or runaway macro recursion are refused rather
// than overflowing the stack.
constexpr int kMaxDepth = 64;
// `'x' * n` past this is refused rather than allocated.
constexpr uint64_t kMaxRepeatBytes = 16 << 20;

using Frame = std::map<std::string, Value>;

class Interpreter {
 public:
  explicit Interpreter(const Object& globals) {
    frames_.emplace_back();
    for (const auto& [k, v] : globals.entries) frames_.back()[k] = v;
  }

  absl::Status RenderBody(const Body& body, std::string* out) {
    if (++depth_ > kMaxDepth) return absl::InvalidArgumentError("template nests too deeply");
    for (const StmtPtr& stmt : body) {
      absl::Status status = Execute(*stmt, out);
      if (!status.ok()) {
        --depth_;
        return status;
      }
      if (loop_control_ != LoopControl::kNone) break;  // unwinds to the enclosing for
    }
    --depth_;
    return absl::OkStatus();
  }

 private:
  absl::Status Error(int line, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("template line ", line, ": ", what));
  }

  Value Lookup(const std::string& name) const {
    for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
      auto found = it->find(name);
      if (found != it->end()) return found->second;
    }
    return Value();
  }

  absl::Status Execute(const Stmt& stmt, std::string* out) {
    switch (stmt.kind) {
      case Stmt::Kind::kText:
        out->append(stmt.text);
        return absl::OkStatus();
      case Stmt::Kind::kOutput: {
        TANDEM_ASSIGN_OR_RETURN(Value v, Evaluate(*stmt.expr));
        out->append(v.ToString());
        return absl::OkStatus();
      }
      case Stmt::Kind::kIf:
        for (size_t i = 0; i < stmt.conditions.size(); ++i) {
          TANDEM_ASSIGN_OR_RETURN(Value cond, Evaluate(*stmt.conditions[i]));
          if (cond.Truthy()) return RenderBody(stmt.bodies[i], out);
        }
        return RenderBody(stmt.else_body, out);
      case Stmt::Kind::kFor:
        return ExecuteFor(stmt, out);
      case Stmt::Kind::kSet:
        return ExecuteSet(stmt);
      case Stmt::Kind::kMacro:
        frames_.back()[stmt.text] = MakeMacro(stmt);
        return absl::OkStatus();
      case Stmt::Kind::kBreak:
        loop_control_ = LoopControl::kBreak;
        return absl::OkStatus();
      case Stmt::Kind::kContinue:
        loop_control_ = LoopControl::kContinue;
        return absl::OkStatus();
    }
    return absl::OkStatus();
  }

  absl::Status Assign(const std::vector<std::string>& targets, const Value& value, int line) {
    if (targets.size() == 1) {
      frames_.back()[targets[0]] = value;
      return absl::OkStatus();
    }
    if (!value.is_array() || value.as_array().size() != targets.size()) {
      return Error(line, absl::StrCat("cannot unpack a ", value.TypeName(), " into ", targets.size(), " names"));
    }
    for (size_t i = 0; i < targets.size(); ++i) frames_.back()[targets[i]] = value.as_array()[i];
    return absl::OkStatus();
  }

  absl::Status ExecuteSet(const Stmt& stmt) {
    Value value;
    if (stmt.block_set) {
      std::string text;
      TANDEM_RETURN_IF_ERROR(RenderBody(stmt.bodies[0], &text));
      value = Value::String(std::move(text));
    } else {
      TANDEM_ASSIGN_OR_RETURN(value, Evaluate(*stmt.expr));
    }
    if (stmt.attribute.empty()) return Assign(stmt.targets, value, stmt.line);
    Value target = Lookup(stmt.targets[0]);
    if (!target.is_object() || !target.as_object().is_namespace) {
      return Error(stmt.line, absl::StrCat("cannot assign attribute on '", stmt.targets[0], "', not a namespace"));
    }
    target.mutable_object().Set(stmt.attribute, std::move(value));
    return absl::OkStatus();
  }

  absl::Status ExecuteFor(const Stmt& stmt, std::string* out) {
    TANDEM_ASSIGN_OR_RETURN(Value iterable, Evaluate(*stmt.expr));
    Array items;
    if (iterable.is_array()) {
      items = iterable.as_array();
    } else if (iterable.is_object()) {
      for (const auto& [k, v] : iterable.as_object().entries) items.push_back(Value::String(k));
    } else if (iterable.is_string()) {
      for (char c : iterable.as_string()) items.push_back(Value::String(std::string(1, c)));
    } else if (!iterable.is_undefined() && !iterable.is_none()) {
      return Error(stmt.line, absl::StrCat("'", iterable.TypeName(), "' object is not iterable"));
    }
    if (!stmt.conditions.empty()) {  // {% for x in xs if cond %}
      Array kept;
      for (const Value& item : items) {
        frames_.emplace_back();
        absl::Status assigned = Assign(stmt.targets, item, stmt.line);
        absl::StatusOr<Value> keep = assigned.ok() ? Evaluate(*stmt.conditions[0]) : assigned;
        frames_.pop_back();
        if (!keep.ok()) return keep.status();
        if (keep->Truthy()) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) return RenderBody(stmt.else_body, out);
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      Object loop;
      loop.entries = {{"index0", Value::Int(i)},
                      {"index", Value::Int(i + 1)},
                      {"revindex0", Value::Int(n - i - 1)},
                      {"revindex", Value::Int(n - i)},
                      {"first", Value::Bool(i == 0)},
                      {"last", Value::Bool(i == n - 1)},
                      {"length", Value::Int(n)},
                      {"previtem", i > 0 ? items[i - 1] : Value()},
                      {"nextitem", i + 1 < n ? items[i + 1] : Value()}};
      frames_.emplace_back();
      frames_.back()["loop"] = Value::MakeObject(std::move(loop));
      absl::Status status = Assign(stmt.targets, items[i], stmt.line);
      if (status.ok()) status = RenderBody(stmt.bodies[0], out);
      frames_.pop_back();
      TANDEM_RETURN_IF_ERROR(status);
      const LoopControl control = loop_control_;
      loop_control_ = LoopControl::kNone;
      if (control == LoopControl::kBreak) break;
    }
    return absl::OkStatus();
  }

  Value MakeMacro(const Stmt& stmt) {
    const Stmt* macro = &stmt;
    return Value::MakeFunction([this, macro](const CallArgs& args) -> absl::StatusOr<Value> {
      Frame frame;
      for (size_t i = 0; i < macro->params.size(); ++i) {
        const auto& [param, default_expr] = macro->params[i];
        if (const Value* v = args.Get(i, param)) {
          frame[param] = *v;
        } else if (default_expr != nullptr) {
          TANDEM_ASSIGN_OR_RETURN(frame[param], Evaluate(*default_expr));
        }
      }
      // A macro sees the globals and its arguments, not its caller's locals.
      std::vector<Frame> saved;
      saved.swap(frames_);
      frames_.push_back(saved.front());
      frames_.push_back(std::move(frame));
      std::string text;
      absl::Status status = RenderBody(macro->bodies[0], &text);
      frames_.swap(saved);
      TANDEM_RETURN_IF_ERROR(status);
      return Value::String(std::move(text));
    });
  }

  absl::StatusOr<Value> CallGlobal(const std::string& name, const CallArgs& args, int line) {
    if (name == "raise_exception") {
      const Value* message = args.Get(0, "message");
      return absl::InvalidArgumentError(message ? message->ToString() : "raise_exception() called by the template");
    }
    if (name == "namespace") {
      Object ns;
      ns.is_namespace = true;
      if (!args.positional.empty() && args.positional[0].is_object()) ns.entries = args.positional[0].as_object().entries;
      for (const auto& [k, v] : args.keyword) ns.Set(k, v);
      return Value::MakeObject(std::move(ns));
    }
    if (name == "range") {
      int64_t start = 0, stop = 0, step = 1;
      std::vector<int64_t> ints;
      for (const Value& v : args.positional) {
        if (!v.is_int()) return Error(line, "range() takes integers");
        ints.push_back(v.as_int());
      }
      if (ints.size() == 1) {
        stop = ints[0];
      } else if (ints.size() >= 2) {
        start = ints[0];
        stop = ints[1];
        if (ints.size() == 3) step = ints[2];
      }
      if (step == 0 || ints.empty()) return Error(line, "range() needs a stop and a nonzero step");
      Array out;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        if (out.size() > 1000000) return Error(line, "range() too long");
        out.push_back(Value::Int(i));
      }
      return Value::MakeArray(std::move(out));
    }
    if (name == "strftime_now") {
      const Value* format = args.Get(0, "format");
      if (format == nullptr || !format->is_string()) return Error(line, "strftime_now() takes a format string");
      std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      const size_t n = std::strftime(buf, sizeof buf, format->as_string().c_str(), &tm);
      return Value::String(std::string(buf, n));
    }
    return absl::UnimplementedError(absl::StrCat("line ", line, ": function '", name, "' is not supported"));
  }

  absl::StatusOr<CallArgs> EvaluateArgs(const Expr& e) {
    CallArgs args;
    for (const ExprPtr& item : e.items) {
      TANDEM_ASSIGN_OR_RETURN(Value v, Evaluate(*item));
      args.positional.push_back(std::move(v));
    }
    for (const auto& [name, expr] : e.kwargs) {
      TANDEM_ASSIGN_OR_RETURN(Value v, Evaluate(*expr));
      args.keyword.emplace_back(name, std::move(v));
    }
    return args;
  }

  absl::StatusOr<Value> EvaluateCall(const Expr& e) {
    TANDEM_ASSIGN_OR_RETURN(CallArgs args, EvaluateArgs(e));
    const Expr& callee = *e.object;
    if (callee.kind == Expr::Kind::kAttribute) {
      TANDEM_ASSIGN_OR_RETURN(Value object, Evaluate(*callee.object));
      if (object.is_object()) {
        const Value* member = object.as_object().Find(callee.name);
        if (member != nullptr && member->is_function()) return member->as_function()(args);
      }
      absl::StatusOr<Value> result = CallMethod(object, callee.name, args);
      if (!result.ok()) return Error(e.line, result.status().message());
      return result;
    }
    if (callee.kind == Expr::Kind::kName) {
      Value f = Lookup(callee.name);
      if (f.is_undefined()) return CallGlobal(callee.name, args, e.line);
      if (!f.is_function()) return Error(e.line, absl::StrCat("'", callee.name, "' is not callable"));
      return f.as_function()(args);
    }
    TANDEM_ASSIGN_OR_RETURN(Value f, Evaluate(callee));
    if (!f.is_function()) return Error(e.line, absl::StrCat("a ", f.TypeName(), " is not callable"));
    return f.as_function()(args);
  }

  static Value Index(const Value& object, const Value& key) {
    if (object.is_object() && key.is_string()) {
      const Value* v = object.as_object().Find(key.as_string());
      return v ? *v : Value();
    }
    if ((object.is_array() || object.is_string()) && key.is_int()) {
      const int64_t size = static_cast<int64_t>(object.is_array() ? object.as_array().size() : object.as_string().size());
      int64_t i = key.as_int();
      if (i < 0) i += size;
      if (i < 0 || i >= size) return Value();
      return object.is_array() ? object.as_array()[i] : Value::String(std::string(1, object.as_string()[i]));
    }
    return Value();
  }

  absl::StatusOr<Value> EvaluateSlice(const Expr& e) {
    TANDEM_ASSIGN_OR_RETURN(Value object, Evaluate(*e.object));
    int64_t bounds[3] = {0, 0, 1};
    bool given[3] = {false, false, false};
    for (int i = 0; i < 3; ++i) {
      if (e.items[i] == nullptr) continue;
      TANDEM_ASSIGN_OR_RETURN(Value v, Evaluate(*e.items[i]));
      if (v.is_none()) continue;
      if (!v.is_int()) return Error(e.line, "slice indices must be integers");
      bounds[i] = v.as_int();
      given[i] = true;
    }
    const int64_t step = bounds[2];
    if (step == 0) return Error(e.line, "slice step cannot be zero");
    if (!object.is_array() && !object.is_string()) return Error(e.line, absl::StrCat("cannot slice a ", object.TypeName()));
    const int64_t n = static_cast<int64_t>(object.is_array() ? object.as_array().size() : object.as_string().size());
    // Python's slice.indices().
    auto clamp = [&](int64_t v, bool is_given, int64_t fallback) {
      if (!is_given) return fallback;
      if (v < 0) v += n;
      if (step > 0) return std::clamp<int64_t>(v, 0, n);
      return std::clamp<int64_t>(v, -1, n - 1);
    };
    const int64_t start = clamp(bounds[0], given[0], step > 0 ? 0 : n - 1);
    const int64_t stop = clamp(bounds[1], given[1], step > 0 ? n : -1);
    Array items;
    std::string chars;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (object.is_array()) {
        items.push_back(object.as_array()[i]);
      } else {
        chars.push_back(object.as_string()[i]);
      }
    }
    return object.is_array() ? Value::MakeArray(std::move(items)) : Value::String(std::move(chars));
  }

  absl::StatusOr<Value> Arithmetic(const std::string& op, const Value& a, const Value& b, int line) {
    if (op == "+") {
      if (a.is_string() && b.is_string()) return Value::String(a.as_string() + b.as_string());
      if (a.is_array() && b.is_array()) {
        Array items = a.as_array();
        items.insert(items.end(), b.as_array().begin(), b.as_array().end());
        return Value::MakeArray(std::move(items));
      }
    }
    if (op == "*" && ((a.is_string() && b.is_int()) || (a.is_int() && b.is_string()))) {
      const Value& s = a.is_string() ? a : b;
      const int64_t times = (a.is_int() ? a : b).as_int();
      if (times > 0 && s.as_string().size() * static_cast<uint64_t>(times) > kMaxRepeatBytes) {
        return Error(line, "string repetition too long");
      }
      std::string out;
      for (int64_t i = 0; i < times; ++i) out += s.as_string();
      return Value::String(std::move(out));
    }
    const bool a_num = a.is_number() || a.is_bool(), b_num = b.is_number() || b.is_bool();
    if (!a_num || !b_num) {
      return Error(line, absl::StrCat("unsupported operand types for ", op, ": '", a.TypeName(), "' and '",
                                      b.TypeName(), "'"));
    }
    auto num = [](const Value& v) { return v.is_bool() ? (v.as_bool() ? 1.0 : 0.0) : v.as_number(); };
    auto integer = [](const Value& v) { return v.is_bool() ? int64_t{v.as_bool()} : v.as_int(); };
    const bool ints = !a.is_float() && !b.is_float();
    const double x = num(a), y = num(b);
    if (op == "/") {
      if (y == 0) return Error(line, "division by zero");
      return Value::Float(x / y);
    }
    if (op == "**") {
      const double p = std::pow(x, y);
      if (ints && integer(b) >= 0 && std::fabs(p) < 9.2e18) return Value::Int(static_cast<int64_t>(p));
      return Value::Float(p);
    }
    if (op == "//" || op == "%") {
      if (y == 0) return Error(line, "division by zero");
      if (ints) {
        const int64_t p = integer(a), q = integer(b);
        if (q == -1) {  // INT64_MIN / -1 overflows int64
          if (op == "%") return Value::Int(0);
          return p == INT64_MIN ? Value::Float(-static_cast<double>(p)) : Value::Int(-p);
        }
        int64_t div = p / q, mod = p % q;
        if (mod != 0 && ((mod < 0) != (q < 0))) {  // Python floors
          --div;
          mod += q;
        }
        return Value::Int(op == "//" ? div : mod);
      }
      const double div = std::floor(x / y);
      return Value::Float(op == "//" ? div : x - div * y);
    }
    if (ints) {
      // Python ints do not overflow; past int64 the result goes to float.
      const int64_t p = integer(a), q = integer(b);
      int64_t r = 0;
      const bool overflow = op == "+"   ? __builtin_add_overflow(p, q, &r)
                            : op == "-" ? __builtin_sub_overflow(p, q, &r)
                                        : __builtin_mul_overflow(p, q, &r);
      if (!overflow) return Value::Int(r);
    }
    return Value::Float(op == "+" ? x + y : op == "-" ? x - y : x * y);
  }

  absl::StatusOr<Value> EvaluateBinary(const Expr& e) {
    const std::string& op = e.name;
    TANDEM_ASSIGN_OR_RETURN(Value a, Evaluate(*e.object));
    // and/or return an operand, as in Python, and short-circuit.
    if (op == "and") return a.Truthy() ? Evaluate(*e.items[0]) : a;
    if (op == "or") return a.Truthy() ? a : Evaluate(*e.items[0]);
    TANDEM_ASSIGN_OR_RETURN(Value b, Evaluate(*e.items[0]));
    if (op == "~") return Value::String(a.ToString() + b.ToString());
    if (op == "==") return Value::Bool(a == b);
    if (op == "!=") return Value::Bool(!(a == b));
    if (op == "in" || op == "not in") {
      absl::StatusOr<bool> in = Contains(b, a);
      if (!in.ok()) return Error(e.line, in.status().message());
      return Value::Bool(*in == (op == "in"));
    }
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      const bool swap = op == ">" || op == "<=";
      absl::StatusOr<bool> less = swap ? LessThan(b, a) : LessThan(a, b);
      if (!less.ok()) return Error(e.line, less.status().message());
      return Value::Bool((op == "<" || op == ">") ? *less : !*less);
    }
    return Arithmetic(op, a, b, e.line);
  }

  absl::StatusOr<Value> Evaluate(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::kLiteral:
        return e.value;
      case Expr::Kind::kName:
        return Lookup(e.name);
      case Expr::Kind::kList: {
        Array items;
        for (const ExprPtr& item : e.items) {
          TANDEM_ASSIGN_OR_RETURN(Value v, Evaluate(*item));
          items.push_back(std::move(v));
        }
        return Value::MakeArray(std::move(items));
      }
      case Expr::Kind::kDict: {
        Object object;
        for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
          TANDEM_ASSIGN_OR_RETURN(Value key, Evaluate(*e.items[i]));
          TANDEM_ASSIGN_OR_RETURN(Value value, Evaluate(*e.items[i + 1]));
          if (!key.is_string()) return Error(e.line, "dict keys must be strings");
          object.Set(key.as_string(), std::move(value));
        }
        return Value::MakeObject(std::move(object));
      }
      case Expr::Kind::kAttribute: {
        TANDEM_ASSIGN_OR_RETURN(Value object, Evaluate(*e.object));
        return Index(object, Value::String(e.name));
      }
      case Expr::Kind::kSubscript: {
        TANDEM_ASSIGN_OR_RETURN(Value object, Evaluate(*e.object));
        TANDEM_ASSIGN_OR_RETURN(Value key, Evaluate(*e.items[0]));
        return Index(object, key);
      }
      case Expr::Kind::kSlice:
        return EvaluateSlice(e);
      case Expr::Kind::kCall:
        return EvaluateCall(e);
      case Expr::Kind::kFilter: {
        TANDEM_ASSIGN_OR_RETURN(Value input, Evaluate(*e.object));
        TANDEM_ASSIGN_OR_RETURN(CallArgs args, EvaluateArgs(e));
        absl::StatusOr<Value> result = ApplyFilter(e.name, input, args);
        if (!result.ok()) return Error(e.line, result.status().message());
        return result;
      }
      case Expr::Kind::kTest: {
        TANDEM_ASSIGN_OR_RETURN(Value input, Evaluate(*e.object));
        TANDEM_ASSIGN_OR_RETURN(CallArgs args, EvaluateArgs(e));
        absl::StatusOr<bool> result = ApplyTest(e.name, input, args);
        if (!result.ok()) return Error(e.line, result.status().message());
        return Value::Bool(*result != e.negated);
      }
      case Expr::Kind::kUnary: {
        TANDEM_ASSIGN_OR_RETURN(Value v, Evaluate(*e.items[0]));
        if (e.name == "not") return Value::Bool(!v.Truthy());
        if (v.is_int() && v.as_int() != INT64_MIN) return Value::Int(e.name == "-" ? -v.as_int() : v.as_int());
        if (v.is_float()) return Value::Float(e.name == "-" ? -v.as_number() : v.as_number());
        return Error(e.line, absl::StrCat("bad operand type for unary ", e.name, ": '", v.TypeName(), "'"));
      }
      case Expr::Kind::kBinary:
        return EvaluateBinary(e);
      case Expr::Kind::kCondition: {
        TANDEM_ASSIGN_OR_RETURN(Value cond, Evaluate(*e.items[1]));
        if (cond.Truthy()) return Evaluate(*e.items[0]);
        return e.items[2] ? Evaluate(*e.items[2]) : Value();
      }
    }
    return Value();
  }

  std::vector<Frame> frames_;
  int depth_ = 0;
  // Set by {% break %}/{% continue %}: bodies stop executing until the
  // innermost for loop takes it (the parser allows them only in loops).
  enum class LoopControl { kNone, kBreak, kContinue } loop_control_ = LoopControl::kNone;
};

}  // namespace

absl::StatusOr<std::string> Render(const Template& tmpl, const Object& globals) {
  Interpreter interpreter(globals);
  std::string out;
  TANDEM_RETURN_IF_ERROR(interpreter.RenderBody(tmpl.body, &out));
  return out;
}

}  // namespace tandem::jinja
