#include "common/chat_template/jinja_parser.h"

#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/chat_template/jinja_filters.h"
#include "common/chat_template/jinja_lexer.h"
#include "common/util/status_macros.h"

namespace tandem::jinja {
namespace {

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  absl::StatusOr<std::unique_ptr<Template>> Run() {
    auto tmpl = std::make_unique<Template>();
    std::string stop;
    TANDEM_RETURN_IF_ERROR(ParseBody({}, &tmpl->body, &stop));
    // Calls to macros defined anywhere in the template are fine; any other
    // unknown function is refused.
    for (const auto& [name, line] : called_names_) {
      if (!IsKnownGlobalFunction(name) && macros_.count(name) == 0) {
        return absl::UnimplementedError(absl::StrCat("line ", line, ": function '", name, "' is not supported"));
      }
    }
    return tmpl;
  }

 private:
  const Token& Peek(size_t ahead = 0) const { return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)]; }
  const Token& Next() { return tokens_[std::min(pos_++, tokens_.size() - 1)]; }
  bool IsOp(absl::string_view op, size_t ahead = 0) const {
    return Peek(ahead).kind == TokenKind::kOperator && Peek(ahead).text == op;
  }
  bool IsName(absl::string_view name, size_t ahead = 0) const {
    return Peek(ahead).kind == TokenKind::kName && Peek(ahead).text == name;
  }
  bool AcceptOp(absl::string_view op) {
    if (!IsOp(op)) return false;
    ++pos_;
    return true;
  }
  bool AcceptName(absl::string_view name) {
    if (!IsName(name)) return false;
    ++pos_;
    return true;
  }
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("template line ", Peek().line, ": ", what));
  }
  absl::Status ExpectOp(absl::string_view op) {
    if (!AcceptOp(op)) return Error(absl::StrCat("expected '", op, "', got '", Peek().text, "'"));
    return absl::OkStatus();
  }
  absl::Status ExpectStmtEnd() {
    if (Peek().kind != TokenKind::kStmtEnd) return Error(absl::StrCat("expected '%}', got '", Peek().text, "'"));
    ++pos_;
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Peek().kind != TokenKind::kName) return Error(absl::StrCat("expected a name, got '", Peek().text, "'"));
    return Next().text;
  }

  // Parses statements until `{% <one of stops> ...`; leaves pos_ after the
  // stop keyword and stores it in *stop ("" at the end of the template).
  absl::Status ParseBody(const std::set<std::string>& stops, Body* body, std::string* stop) {
    while (true) {
      const Token& t = Peek();
      switch (t.kind) {
        case TokenKind::kEnd:
          if (!stops.empty()) return Error(absl::StrCat("missing {% ", *stops.begin(), " %}"));
          *stop = "";
          return absl::OkStatus();
        case TokenKind::kText: {
          auto s = std::make_unique<Stmt>();
          s->kind = Stmt::Kind::kText;
          s->line = t.line;
          s->text = Next().text;
          body->push_back(std::move(s));
          break;
        }
        case TokenKind::kExprBegin: {
          Next();
          auto s = std::make_unique<Stmt>();
          s->kind = Stmt::Kind::kOutput;
          s->line = t.line;
          TANDEM_ASSIGN_OR_RETURN(s->expr, ParseExpression());
          if (Peek().kind != TokenKind::kExprEnd) return Error(absl::StrCat("expected '}}', got '", Peek().text, "'"));
          Next();
          body->push_back(std::move(s));
          break;
        }
        case TokenKind::kStmtBegin: {
          Next();
          TANDEM_ASSIGN_OR_RETURN(std::string keyword, ExpectName());
          if (stops.count(keyword)) {
            *stop = keyword;
            return absl::OkStatus();
          }
          TANDEM_RETURN_IF_ERROR(ParseStatement(keyword, t.line, body));
          break;
        }
        default:
          return Error(absl::StrCat("unexpected '", t.text, "'"));
      }
    }
  }

  absl::Status ParseStatement(const std::string& keyword, int line, Body* body) {
    auto s = std::make_unique<Stmt>();
    s->line = line;
    std::string stop;
    if (keyword == "if") {
      s->kind = Stmt::Kind::kIf;
      TANDEM_ASSIGN_OR_RETURN(ExprPtr cond, ParseExpression());
      TANDEM_RETURN_IF_ERROR(ExpectStmtEnd());
      while (true) {
        s->conditions.push_back(std::move(cond));
        s->bodies.emplace_back();
        TANDEM_RETURN_IF_ERROR(ParseBody({"elif", "else", "endif"}, &s->bodies.back(), &stop));
        if (stop == "elif") {
          TANDEM_ASSIGN_OR_RETURN(cond, ParseExpression());
          TANDEM_RETURN_IF_ERROR(ExpectStmtEnd());
          continue;
        }
        TANDEM_RETURN_IF_ERROR(ExpectStmtEnd());
        if (stop == "else") {
          TANDEM_RETURN_IF_ERROR(ParseBody({"endif"}, &s->else_body, &stop));
          TANDEM_RETURN_IF_ERROR(ExpectStmtEnd());
        }
        break;
      }
    } else if (keyword == "for") {
      s->kind = Stmt::Kind::kFor;
      do {
        TANDEM_ASSIGN_OR_RETURN(std::string target, ExpectName());
        s->targets.push_back(std::move(target));
      } while (AcceptOp(","));
      if (!AcceptName("in")) return Error("expected 'in' in for loop");
      // The iterable stops before a loop filter's `if` (no conditional
      // expression there, as in Jinja).
      TANDEM_ASSIGN_OR_RETURN(s->expr, ParseOr());
      if (AcceptName("if")) {
        TANDEM_ASSIGN_OR_RETURN(ExprPtr cond, ParseExpression());
        s->conditions.push_back(std::move(cond));
      }
      if (IsName("recursive")) return absl::UnimplementedError(absl::StrCat("line ", line, ": recursive for loops"));
      TANDEM_RETURN_IF_ERROR(ExpectStmtEnd());
      s->bodies.emplace_back();
      ++loop_depth_;
      absl::Status body_status = ParseBody({"else", "endfor"}, &s->bodies.back(), &stop);
      --loop_depth_;
      TANDEM_RETURN_IF_ERROR(body_status);
      TANDEM_RETURN_IF_ERROR(ExpectStmtEnd());
      if (stop == "else") {
        TANDEM_RETURN_IF_ERROR(ParseBody({"endfor"}, &s->else_body, &stop));
        TANDEM_RETURN_IF_ERROR(ExpectStmtEnd());
      }
    } else if (keyword == "set") {
      s->kind = Stmt::Kind::kSet;
      TANDEM_ASSIGN_OR_RETURN(std::string target, ExpectName());
      s->targets.push_back(std::move(target));
      if (AcceptOp(".")) {
        TANDEM_ASSIGN_OR_RETURN(s->attribute, ExpectName());
      }
      while (AcceptOp(",")) {
        TANDEM_ASSIGN_OR_RETURN(std::string more, ExpectName());
        s->targets.push_back(std::move(more));
      }
      if (AcceptOp("=")) {
        TANDEM_ASSIGN_OR_RETURN(s->expr, ParseTuple());
        TANDEM_RETURN_IF_ERROR(ExpectStmtEnd());
      } else {
        if (s->targets.size() != 1 || !s->attribute.empty()) return Error("a block set takes one plain name");
        TANDEM_RETURN_IF_ERROR(ExpectStmtEnd());
        s->block_set = true;
        s->bodies.emplace_back();
        TANDEM_RETURN_IF_ERROR(ParseBody({"endset"}, &s->bodies.back(), &stop));
        TANDEM_RETURN_IF_ERROR(ExpectStmtEnd());
      }
    } else if (keyword == "macro") {
      s->kind = Stmt::Kind::kMacro;
      TANDEM_ASSIGN_OR_RETURN(s->text, ExpectName());
      macros_.insert(s->text);
      TANDEM_RETURN_IF_ERROR(ExpectOp("("));
      while (!AcceptOp(")")) {
        TANDEM_ASSIGN_OR_RETURN(std::string param, ExpectName());
        ExprPtr default_value;
        if (AcceptOp("=")) {
          TANDEM_ASSIGN_OR_RETURN(default_value, ParseExpression());
        }
        s->params.emplace_back(std::move(param), std::move(default_value));
        if (!IsOp(")")) TANDEM_RETURN_IF_ERROR(ExpectOp(","));
      }
      TANDEM_RETURN_IF_ERROR(ExpectStmtEnd());
      s->bodies.emplace_back();
      const int outer_loops = loop_depth_;
      loop_depth_ = 0;
      absl::Status body_status = ParseBody({"endmacro"}, &s->bodies.back(), &stop);
      loop_depth_ = outer_loops;
      TANDEM_RETURN_IF_ERROR(body_status);
      TANDEM_RETURN_IF_ERROR(ExpectStmtEnd());
    } else if (keyword == "break" || keyword == "continue") {
      if (loop_depth_ == 0) return Error(absl::StrCat("{% ", keyword, " %} outside a for loop"));
      s->kind = keyword == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
      TANDEM_RETURN_IF_ERROR(ExpectStmtEnd());
    } else if (keyword == "generation") {
      // transformers' {% generation %} marks assistant text for training
      // masks; it renders its body unchanged.
      TANDEM_RETURN_IF_ERROR(ExpectStmtEnd());
      TANDEM_RETURN_IF_ERROR(ParseBody({"endgeneration"}, body, &stop));
      return ExpectStmtEnd();
    } else if (keyword.rfind("end", 0) == 0 || keyword == "elif" || keyword == "else") {
      return absl::InvalidArgumentError(absl::StrCat("template line ", line, ": unexpected {% ", keyword, " %}"));
    } else {
      return absl::UnimplementedError(absl::StrCat("line ", line, ": statement {% ", keyword, " %} is not supported"));
    }
    body->push_back(std::move(s));
    return absl::OkStatus();
  }

  ExprPtr Make(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // `a, b` in `{% set x = a, b %}` is a tuple.
  absl::StatusOr<ExprPtr> ParseTuple() {
    TANDEM_ASSIGN_OR_RETURN(ExprPtr first, ParseExpression());
    if (!IsOp(",")) return first;
    ExprPtr list = Make(Expr::Kind::kList, first->line);
    list->items.push_back(std::move(first));
    while (AcceptOp(",")) {
      TANDEM_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
      list->items.push_back(std::move(item));
    }
    return list;
  }

  absl::StatusOr<ExprPtr> ParseExpression() {
    TANDEM_ASSIGN_OR_RETURN(ExprPtr expr, ParseOr());
    while (IsName("if")) {
      Next();
      ExprPtr cond = Make(Expr::Kind::kCondition, expr->line);
      TANDEM_ASSIGN_OR_RETURN(ExprPtr test, ParseOr());
      ExprPtr otherwise;
      if (AcceptName("else")) {
        TANDEM_ASSIGN_OR_RETURN(otherwise, ParseExpression());
      }
      cond->items.push_back(std::move(expr));
      cond->items.push_back(std::move(test));
      cond->items.push_back(std::move(otherwise));
      expr = std::move(cond);
    }
    return expr;
  }

  ExprPtr Binary(std::string op, ExprPtr left, ExprPtr right) {
    ExprPtr e = Make(Expr::Kind::kBinary, left->line);
    e->name = std::move(op);
    e->object = std::move(left);
    e->items.push_back(std::move(right));
    return e;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    TANDEM_ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    while (AcceptName("or")) {
      TANDEM_ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
      left = Binary("or", std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    TANDEM_ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    while (AcceptName("and")) {
      TANDEM_ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
      left = Binary("and", std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      const int line = Next().line;
      TANDEM_ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      ExprPtr e = Make(Expr::Kind::kUnary, line);
      e->name = "not";
      e->items.push_back(std::move(operand));
      return e;
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    TANDEM_ASSIGN_OR_RETURN(ExprPtr left, ParseMath1());
    while (true) {
      std::string op;
      if (Peek().kind == TokenKind::kOperator &&
          (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" || Peek().text == ">" ||
           Peek().text == "<=" || Peek().text == ">=")) {
        op = Next().text;
      } else if (AcceptName("in")) {
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        pos_ += 2;
        op = "not in";
      } else {
        return left;
      }
      TANDEM_ASSIGN_OR_RETURN(ExprPtr right, ParseMath1());
      left = Binary(op, std::move(left), std::move(right));
    }
  }

  absl::StatusOr<ExprPtr> ParseMath1() {
    TANDEM_ASSIGN_OR_RETURN(ExprPtr left, ParseConcat());
    while (IsOp("+") || IsOp("-")) {
      std::string op = Next().text;
      TANDEM_ASSIGN_OR_RETURN(ExprPtr right, ParseConcat());
      left = Binary(op, std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseConcat() {
    TANDEM_ASSIGN_OR_RETURN(ExprPtr left, ParseMath2());
    while (AcceptOp("~")) {
      TANDEM_ASSIGN_OR_RETURN(ExprPtr right, ParseMath2());
      left = Binary("~", std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseMath2() {
    TANDEM_ASSIGN_OR_RETURN(ExprPtr left, ParsePow());
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      std::string op = Next().text;
      TANDEM_ASSIGN_OR_RETURN(ExprPtr right, ParsePow());
      left = Binary(op, std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParsePow() {
    TANDEM_ASSIGN_OR_RETURN(ExprPtr left, ParseUnary(true));
    while (AcceptOp("**")) {
      TANDEM_ASSIGN_OR_RETURN(ExprPtr right, ParseUnary(true));
      left = Binary("**", std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filters) {
    ExprPtr expr;
    if (IsOp("-") || IsOp("+")) {
      const Token& t = Next();
      TANDEM_ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(false));
      expr = Make(Expr::Kind::kUnary, t.line);
      expr->name = t.text;
      expr->items.push_back(std::move(operand));
    } else {
      TANDEM_ASSIGN_OR_RETURN(expr, ParsePrimary());
      TANDEM_ASSIGN_OR_RETURN(expr, ParsePostfix(std::move(expr)));
    }
    if (with_filters) {
      TANDEM_ASSIGN_OR_RETURN(expr, ParseFiltersAndTests(std::move(expr)));
    }
    return expr;
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& t = Next();
    switch (t.kind) {
      case TokenKind::kString: {
        std::string text = t.text;
        // Adjacent string literals concatenate, as in Python.
        while (Peek().kind == TokenKind::kString) text += Next().text;
        ExprPtr e = Make(Expr::Kind::kLiteral, t.line);
        e->value = Value::String(std::move(text));
        return e;
      }
      case TokenKind::kInt: {
        ExprPtr e = Make(Expr::Kind::kLiteral, t.line);
        e->value = Value::Int(t.int_value);
        return e;
      }
      case TokenKind::kFloat: {
        ExprPtr e = Make(Expr::Kind::kLiteral, t.line);
        e->value = Value::Float(t.float_value);
        return e;
      }
      case TokenKind::kName: {
        ExprPtr e = Make(Expr::Kind::kLiteral, t.line);
        if (t.text == "true" || t.text == "True") {
          e->value = Value::Bool(true);
        } else if (t.text == "false" || t.text == "False") {
          e->value = Value::Bool(false);
        } else if (t.text == "none" || t.text == "None") {
          e->value = Value::None();
        } else {
          e->kind = Expr::Kind::kName;
          e->name = t.text;
        }
        return e;
      }
      case TokenKind::kOperator:
        if (t.text == "(") {
          TANDEM_ASSIGN_OR_RETURN(ExprPtr inner, ParseExpression());
          if (IsOp(",")) {  // a tuple
            ExprPtr list = Make(Expr::Kind::kList, t.line);
            list->items.push_back(std::move(inner));
            while (AcceptOp(",") && !IsOp(")")) {
              TANDEM_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
              list->items.push_back(std::move(item));
            }
            inner = std::move(list);
          }
          TANDEM_RETURN_IF_ERROR(ExpectOp(")"));
          return inner;
        }
        if (t.text == "[") {
          ExprPtr list = Make(Expr::Kind::kList, t.line);
          while (!AcceptOp("]")) {
            TANDEM_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
            list->items.push_back(std::move(item));
            if (!IsOp("]")) TANDEM_RETURN_IF_ERROR(ExpectOp(","));
          }
          return list;
        }
        if (t.text == "{") {
          ExprPtr dict = Make(Expr::Kind::kDict, t.line);
          while (!AcceptOp("}")) {
            TANDEM_ASSIGN_OR_RETURN(ExprPtr key, ParseExpression());
            TANDEM_RETURN_IF_ERROR(ExpectOp(":"));
            TANDEM_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
            dict->items.push_back(std::move(key));
            dict->items.push_back(std::move(value));
            if (!IsOp("}")) TANDEM_RETURN_IF_ERROR(ExpectOp(","));
          }
          return dict;
        }
        break;
      default:
        break;
    }
    --pos_;
    return Error(absl::StrCat("unexpected '", t.text, "' in an expression"));
  }

  absl::Status ParseCallArgs(Expr* call) {
    while (!AcceptOp(")")) {
      if (Peek().kind == TokenKind::kName && IsOp("=", 1)) {
        std::string name = Next().text;
        Next();
        TANDEM_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
        call->kwargs.emplace_back(std::move(name), std::move(value));
      } else {
        TANDEM_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
        call->items.push_back(std::move(value));
      }
      if (!IsOp(")")) TANDEM_RETURN_IF_ERROR(ExpectOp(","));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr expr) {
    while (true) {
      if (AcceptOp(".")) {
        ExprPtr e = Make(Expr::Kind::kAttribute, expr->line);
        if (Peek().kind == TokenKind::kInt) {  // foo.0 is foo[0]
          e->kind = Expr::Kind::kSubscript;
          ExprPtr index = Make(Expr::Kind::kLiteral, expr->line);
          index->value = Value::Int(Next().int_value);
          e->items.push_back(std::move(index));
        } else {
          TANDEM_ASSIGN_OR_RETURN(e->name, ExpectName());
        }
        e->object = std::move(expr);
        expr = std::move(e);
      } else if (AcceptOp("[")) {
        ExprPtr e = Make(Expr::Kind::kSubscript, expr->line);
        ExprPtr parts[3];
        int colons = 0;
        while (!AcceptOp("]")) {
          if (AcceptOp(":")) {
            if (++colons > 2) return Error("too many ':' in a slice");
            continue;
          }
          if (parts[colons] != nullptr) return Error("expected ']'");
          TANDEM_ASSIGN_OR_RETURN(parts[colons], ParseExpression());
        }
        if (colons == 0) {
          if (parts[0] == nullptr) return Error("empty subscript");
          e->items.push_back(std::move(parts[0]));
        } else {
          e->kind = Expr::Kind::kSlice;
          for (auto& p : parts) e->items.push_back(std::move(p));
        }
        e->object = std::move(expr);
        expr = std::move(e);
      } else if (AcceptOp("(")) {
        if (expr->kind == Expr::Kind::kName) {
          called_names_.emplace_back(expr->name, expr->line);
        } else if (expr->kind == Expr::Kind::kAttribute && !IsKnownMethod(expr->name)) {
          return absl::UnimplementedError(
              absl::StrCat("line ", expr->line, ": method '.", expr->name, "()' is not supported"));
        }
        ExprPtr e = Make(Expr::Kind::kCall, expr->line);
        TANDEM_RETURN_IF_ERROR(ParseCallArgs(e.get()));
        e->object = std::move(expr);
        expr = std::move(e);
      } else {
        return expr;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseFiltersAndTests(ExprPtr expr) {
    while (true) {
      if (AcceptOp("|")) {
        ExprPtr e = Make(Expr::Kind::kFilter, expr->line);
        TANDEM_ASSIGN_OR_RETURN(e->name, ExpectName());
        if (!IsKnownFilter(e->name)) {
          return absl::UnimplementedError(absl::StrCat("line ", e->line, ": filter '", e->name, "' is not supported"));
        }
        if (AcceptOp("(")) TANDEM_RETURN_IF_ERROR(ParseCallArgs(e.get()));
        e->object = std::move(expr);
        TANDEM_ASSIGN_OR_RETURN(expr, ParsePostfix(std::move(e)));
      } else if (AcceptName("is")) {
        ExprPtr e = Make(Expr::Kind::kTest, expr->line);
        e->negated = AcceptName("not");
        TANDEM_ASSIGN_OR_RETURN(e->name, ExpectName());
        if (!IsKnownTest(e->name)) {
          return absl::UnimplementedError(absl::StrCat("line ", e->line, ": test '", e->name, "' is not supported"));
        }
        if (AcceptOp("(")) {
          TANDEM_RETURN_IF_ERROR(ParseCallArgs(e.get()));
        } else if (Peek().kind == TokenKind::kString || Peek().kind == TokenKind::kInt ||
                   Peek().kind == TokenKind::kFloat ||
                   (Peek().kind == TokenKind::kName && !IsName("and") && !IsName("or") && !IsName("if") &&
                    !IsName("else") && !IsName("is") && !IsName("in") && !IsName("not"))) {
          // `x is sameas false`, `n is divisibleby 3`: one argument, no parentheses.
          TANDEM_ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
          TANDEM_ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
          e->items.push_back(std::move(arg));
        }
        e->object = std::move(expr);
        expr = std::move(e);
      } else {
        return expr;
      }
    }
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  std::set<std::string> macros_;
  int loop_depth_ = 0;  // for bodies being parsed (break/continue are legal)
  std::vector<std::pair<std::string, int>> called_names_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Template>> Parse(absl::string_view source) {
  TANDEM_ASSIGN_OR_RETURN(std::vector<Token> tokens, Lex(std::string_view(source.data(), source.size())));
  return Parser(std::move(tokens)).Run();
}

}  // namespace tandem::jinja
