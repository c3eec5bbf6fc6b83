// The Jinja syntax tree the parser builds and the interpreter walks. Nodes
// are immutable after parsing and owned by their parent through unique_ptr;
// the root is a Template.
#ifndef TANDEM_COMMON_CHAT_TEMPLATE_JINJA_AST_H_
#define TANDEM_COMMON_CHAT_TEMPLATE_JINJA_AST_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/chat_template/jinja_value.h"

namespace tandem::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,    // value
    kName,       // name
    kList,       // items (also tuples)
    kDict,       // items as key, value, key, value...
    kAttribute,  // object.name
    kSubscript,  // object[index]
    kSlice,      // object[start:stop:step] (items: start, stop, step; null when left out)
    kCall,       // object(args..., kwarg=...)
    kFilter,     // object | name(args...)
    kTest,       // object is [not] name(args...)
    kUnary,      // op: "-", "+", "not"; items[0]
    kBinary,     // op; object, items[0]; "and"/"or" short-circuit
    kCondition,  // items: then, condition, else (else may be null)
  };
  Kind kind;
  int line = 0;
  Value value;
  std::string name;  // kName, kAttribute, kFilter, kTest; op for kUnary/kBinary
  bool negated = false;  // kTest
  ExprPtr object;
  std::vector<ExprPtr> items;  // positional args for kCall/kFilter/kTest
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // conditions[i] guards bodies[i]; else_body
    kFor,       // targets in expr [if condition]: bodies[0]; else_body
    kSet,       // targets[0] (or targets[0].attribute) = expr; with body when a block set
    kMacro,     // name(params=defaults): bodies[0]
    kBreak,     // {% break %} (transformers enables Jinja's loopcontrols)
    kContinue,  // {% continue %}
  };
  Kind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;
  std::vector<ExprPtr> conditions;
  std::vector<Body> bodies;
  Body else_body;
  std::vector<std::string> targets;
  std::string attribute;
  bool block_set = false;
  std::vector<std::pair<std::string, ExprPtr>> params;  // kMacro; null default when none
};

struct Template {
  Body body;
};

}  // namespace tandem::jinja

#endif  // TANDEM_COMMON_CHAT_TEMPLATE_JINJA_AST_H_
