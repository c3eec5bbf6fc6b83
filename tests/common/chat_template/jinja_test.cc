// The Jinja subset construct by construct (lexer whitespace control,
// expressions, statements, filters, tests, methods), with the outputs
// Python's Jinja2 (as transformers configures it) gives, and the refusal of
// what the renderer does not implement.
#include <string>

#include "common/chat_template/jinja_interpreter.h"
#include "common/chat_template/jinja_parser.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tandem::jinja {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<std::string> TryRender(const std::string& source, const nlohmann::json& vars = nlohmann::json::object()) {
  auto tmpl = Parse(source);
  if (!tmpl.ok()) return tmpl.status();
  return Render(**tmpl, Value::FromJson(vars).as_object());
}

std::string R(const std::string& source, const nlohmann::json& vars = nlohmann::json::object()) {
  auto text = TryRender(source, vars);
  EXPECT_TRUE(text.ok()) << source << ": " << text.status();
  return text.ok() ? *text : "<error>";
}

TEST(JinjaWhitespaceTest, TrimBlocksLstripBlocksAndDashes) {
  // trim_blocks eats the newline after a block tag, lstrip_blocks the
  // indentation before one; expressions keep both.
  EXPECT_EQ(R("{% if true %}\nA\n{% endif %}\nB"), "A\nB");
  EXPECT_EQ(R("x\n    {% if true %}\n    y\n    {% endif %}\nz"), "x\n    y\nz");
  EXPECT_EQ(R("a  {{- ' b ' -}}  c"), "a b c");
  EXPECT_EQ(R("a \n {%- if true -%} \n b {%- endif %}"), "ab");
  EXPECT_EQ(R("{{ 'v' }}\n"), "v");  // the trailing newline is dropped
  EXPECT_EQ(R("{{ 'v' }}\nw"), "v\nw");
  EXPECT_EQ(R("a{# note #}\nb{#- x -#}  c"), "ab" "c");
  EXPECT_EQ(R("  {% if true %}x{% endif %}"), "x");
  EXPECT_EQ(R("q  {% if true %}x{% endif %}"), "q  x");  // not alone on its line
}

TEST(JinjaExpressionTest, ArithmeticComparisonAndLogic) {
  EXPECT_EQ(R("{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }}"), "7 3 -4 1 2 1024");
  EXPECT_EQ(R("{{ 7 / 2 }} {{ 4 / 2 }} {{ 1.5 + 1 }}"), "3.5 2.0 2.5");
  EXPECT_EQ(R("{{ 'a' ~ 1 ~ none }} {{ 'ab' + 'c' }} {{ 'ab' * 2 }}"), "a1None abc abab");
  EXPECT_EQ(R("{{ 1 < 2 }} {{ 2 <= 1 }} {{ 'a' == 'a' }} {{ 1 == 1.0 }} {{ [1, 2] == [1, 2] }}"),
            "True False True True True");
  EXPECT_EQ(R("{{ 'b' in 'abc' }} {{ 3 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'abc' }}"),
            "True False True True");
  EXPECT_EQ(R("{{ 0 or 'x' }} {{ 'y' and 0 }} {{ not 0 }} {{ not [] and 1 }}"), "x 0 True 1");
  EXPECT_EQ(R("{{ 'yes' if 1 > 0 else 'no' }}|{{ 'yes' if false }}|"), "yes||");
  // Filters bind tighter than +, `not` looser than `is`.
  EXPECT_EQ(R("{{ 'a' + ' b ' | trim + 'c' }}"), "abc");
  EXPECT_EQ(R("{{ not x is defined }}"), "True");
}

TEST(JinjaExpressionTest, SubscriptsSlicesAttributesAndLiterals) {
  const nlohmann::json vars = {{"m", {{"role", "user"}, {"parts", {1, 2, 3, 4}}}}};
  EXPECT_EQ(R("{{ m.role }} {{ m['role'] }} {{ m.parts[-1] }} {{ m.parts.0 }} {{ m.missing }}|", vars),
            "user user 4 1 |");
  EXPECT_EQ(R("{{ m.parts[1:] }} {{ m.parts[::-1] }} {{ m.parts[:-1] }} {{ m.parts[1:3] }} {{ 'hello'[1:3] }}", vars),
            "[2, 3, 4] [4, 3, 2, 1] [1, 2, 3] [2, 3] el");
  EXPECT_EQ(R("{{ {'a': [1, 'x'], 'b': none} }} {{ (1, 2) | list }} {{ true }} {{ None }}"),
            "{'a': [1, 'x'], 'b': None} [1, 2] True None");
  EXPECT_EQ(R("{{ \"it's\" }} {{ 'a\\nb' }} {{ 'x' 'y' }}"), "it's a\nb xy");
}

TEST(JinjaStatementTest, ForLoopsWithLoopVariablesFiltersElseAndUnpacking) {
  EXPECT_EQ(R("{% for x in xs %}{{ loop.index0 }}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }};"
              "{% endfor %}",
              {{"xs", {"a", "b"}}}),
            "01TrueFalse2;12FalseTrue2;");
  EXPECT_EQ(R("{% for x in [1, 2, 3, 4] if x % 2 == 0 %}{{ x }}{{ loop.length }}{% endfor %}"), "2242");
  EXPECT_EQ(R("{% for x in [] %}no{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(R("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}",
              {{"d", {{"a", 1}, {"b", 2}}}}),
            "a=1;b=2;ab");
  EXPECT_EQ(R("{% for x in [1, 2] %}{{ loop.previtem }}-{{ loop.nextitem }},{% endfor %}"), "-2,1-,");
}

TEST(JinjaStatementTest, SetScopingNamespacesAndIfChains) {
  // A set inside a loop does not leak out; a namespace carries state out.
  EXPECT_EQ(R("{% set x = 1 %}{% for i in [5] %}{% set x = i %}{% endfor %}{{ x }}"), "1");
  EXPECT_EQ(R("{% set ns = namespace(n=0, s='') %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}"
              "{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}"),
            "6 123");
  EXPECT_EQ(R("{% if false %}a{% elif 0 %}b{% elif 'x' %}c{% else %}d{% endif %}"), "c");
  EXPECT_EQ(R("{% if true %}{% set y = 2 %}{% endif %}{{ y }}"), "2");  // if opens no scope
  EXPECT_EQ(R("{% set a, b = [1, 2] %}{{ b }}{{ a }}"), "21");
  EXPECT_EQ(R("{% set block %}in {{ 'side' }}{% endset %}[{{ block }}]"), "[in side]");
}

TEST(JinjaStatementTest, BreakAndContinue) {
  EXPECT_EQ(R("{% for x in [1, 2, 3, 4, 5] %}{% if x == 2 %}{% continue %}{% endif %}"
              "{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}|{% for y in [1, 2] %}{{ y }}{% endfor %}"),
            "13|12");
  EXPECT_EQ(R("{% for a in [1, 2] %}{% for b in [1, 2, 3] %}{% if b == 2 %}{% break %}{% endif %}{{ a }}{{ b }};"
              "{% endfor %}{% endfor %}"),
            "11;21;");
  EXPECT_FALSE(Parse("{% break %}").ok());
  EXPECT_FALSE(Parse("{% for x in y %}{% macro m() %}{% continue %}{% endmacro %}{% endfor %}").ok());
}

TEST(JinjaStatementTest, MacrosAndGenerationBlocks) {
  EXPECT_EQ(R("{% macro tag(name, open=true) %}<{{ '' if open else '/' }}{{ name }}>{% endmacro %}"
              "{{ tag('a') }}x{{ tag('a', open=false) }}"),
            "<a>x</a>");
  EXPECT_EQ(R("{% generation %}kept{% endgeneration %}"), "kept");
}

TEST(JinjaFilterTest, StringAndListFilters) {
  EXPECT_EQ(R("{{ '  x  ' | trim }}|{{ 'AbC' | lower }}{{ 'abc' | upper }}|{{ 'hello world' | title }}|"
              "{{ 'a-b' | replace('-', '+') }}|{{ 5 | string }}{{ 'é✓' | length }}"),
            "x|abcABC|Hello World|a+b|52");
  EXPECT_EQ(R("{{ none | trim }}|{{ [' a '] | trim }}|{{ undefined_name | trim }}|"), "None|[' a ']||");  // str() first
  EXPECT_EQ(R("{{ [1, 2, 3] | join(', ') }}|{{ [3, 1, 2] | first }}{{ [3, 1, 2] | last }}|{{ [3, 1, 2] | sort }}|"
              "{{ [1, 2] | reverse | list }}|{{ [1, 1, 2] | unique | list }}|{{ [1, 2] | length }}{{ [1, 2] | sum }}"),
            "1, 2, 3|32|[1, 2, 3]|[2, 1]|[1, 2]|23");
  EXPECT_EQ(R("{{ x | default('d') }}{{ '' | default('e', true) }}{{ 'v' | default('f') }}"), "dev");
  const nlohmann::json vars = {{"ms", {{{"role", "system"}, {"c", 1}}, {{"role", "user"}, {"c", 2}}}}};
  EXPECT_EQ(R("{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='c') | list }}"
              "{{ ms | rejectattr('role', 'eq', 'user') | map(attribute='role') | join }}"
              "{{ [1, 2, 3, 4] | select('odd') | list }}{{ ms | map(attribute='role') | map('upper') | join(',') }}",
              vars),
            "[2]system[1, 3]SYSTEM,USER");
  EXPECT_EQ(R("{{ 'a\\nb' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}"), "a\n  b|  a\n  b");
  EXPECT_EQ(R("{% for k, v in {'b': 1, 'a': 2} | dictsort %}{{ k }}{{ v }}{% endfor %}|{{ '3' | int + 1 }}|{{ 2 | float }}|{{ -3 | abs }}"),
            "a2b1|4|2.0|3");
}

TEST(JinjaFilterTest, TojsonMatchesPythonJsonDumps) {
  const nlohmann::json vars = {{"v", {{"a", {1, 2.5, nullptr, true}}, {"b", "\"q\"\n\u00e9"}, {"c", nlohmann::json::object()}}}};
  EXPECT_EQ(R("{{ v | tojson }}", vars), "{\"a\": [1, 2.5, null, true], \"b\": \"\\\"q\\\"\\n\u00e9\", \"c\": {}}");
  EXPECT_EQ(R("{{ v | tojson(indent=2) }}", vars),
            "{\n  \"a\": [\n    1,\n    2.5,\n    null,\n    true\n  ],\n  \"b\": \"\\\"q\\\"\\n\u00e9\",\n  \"c\": {}\n}");
  EXPECT_EQ(R("{{ [] | tojson(indent=4) }}{{ 'x' | tojson }}"), "[]\"x\"");
}

TEST(JinjaTestTest, TypeAndValueTests) {
  const nlohmann::json vars = {{"s", "x"}, {"n", nullptr}, {"d", nlohmann::json::object()}, {"l", {1}}, {"f", false}};
  EXPECT_EQ(R("{{ s is defined }}{{ u is defined }}{{ u is undefined }}{{ n is none }}{{ s is not none }}", vars),
            "TrueFalseTrueTrueTrue");
  EXPECT_EQ(R("{{ s is string }}{{ d is mapping }}{{ l is mapping }}{{ l is iterable }}{{ 1 is number }}"
              "{{ 1.5 is integer }}{{ f is false }}{{ f is sameas false }}{{ 4 is divisibleby 2 }}{{ 3 is odd }}",
              vars),
            "TrueTrueFalseTrueTrueFalseTrueTrueTrueTrue");
}

TEST(JinjaMethodTest, StringAndDictMethods) {
  EXPECT_EQ(R("{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '\\na'.lstrip('\\n') }}|{{ 'a  '.rstrip() }}|"
              "{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}|{{ 'a<t>b<t>c'.split('<t>') }}|"
              "{{ ' a  b '.split() }}|{{ 'a,b,c'.split(',', 1) }}|{{ 'ab'.upper() }}{{ 'aXa'.replace('a', 'b') }}|"
              "{{ '-'.join(['x', 'y']) }}"),
            "a b|a|a|a|TrueTrue|['a', 'b', 'c']|['a', 'b']|['a', 'b,c']|ABbXb|x-y");
  const nlohmann::json vars = {{"d", {{"k", "v"}}}};
  EXPECT_EQ(R("{{ d.get('k') }}{{ d.get('z', 'dflt') }}{{ d.get('z') }}{{ d.keys() | list }}{{ d.values() | list }}",
              vars),
            "vdfltNone['k']['v']");
}

TEST(JinjaRefusalTest, UnsupportedConstructsAreRefusedAtParseNamingThem) {
  struct Case {
    const char* source;
    const char* named;
  };
  for (const Case& c : {Case{"{% include 'other.j2' %}", "{% include %}"}, Case{"{% extends 'base' %}", "extends"},
                        Case{"{% raw %}x{% endraw %}", "{% raw %}"}, Case{"{{ x | wordwrap }}", "filter 'wordwrap'"},
                        Case{"{{ x is escaped }}", "test 'escaped'"}, Case{"{{ s.zfill(3) }}", "method '.zfill()'"},
                        Case{"{{ lipsum() }}", "function 'lipsum'"},
                        Case{"{% for x in xs recursive %}{% endfor %}", "recursive"}}) {
    auto parsed = Parse(c.source);
    ASSERT_FALSE(parsed.ok()) << c.source;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kUnimplemented) << c.source << ": " << parsed.status();
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(c.named)) << c.source;
  }
}

TEST(JinjaRefusalTest, SyntaxAndRuntimeErrorsAreInvalidArgument) {
  for (const char* source : {"{% if x %}never closed", "{{ 1 + }}", "{{ 'unterminated }}", "{% for x %}{% endfor %}",
                             "{% endif %}"}) {
    auto parsed = TryRender(source);
    ASSERT_FALSE(parsed.ok()) << source;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << source << ": " << parsed.status();
  }
  auto raised = TryRender("{{ raise_exception('roles must alternate') }}");
  EXPECT_EQ(raised.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(raised.status().message()), HasSubstr("roles must alternate"));
  EXPECT_FALSE(TryRender("{{ 'a' + [1] }}").ok());
  EXPECT_FALSE(TryRender("{{ 'a' in none }}").ok());
  EXPECT_FALSE(TryRender("{% set x = 1 %}{% set x.y = 2 %}").ok());
  EXPECT_FALSE(TryRender("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}").ok());  // unbounded recursion
  EXPECT_FALSE(TryRender("{{ 'x' * 100000000 }}").ok());  // refused, not allocated
  // Python ints do not overflow; past int64 the result is a float.
  EXPECT_EQ(R("{{ 9223372036854775807 + 1 > 0 }} {{ (0 - 9223372036854775807 - 1) // -1 > 0 }}"), "True True");
}

}  // namespace
}  // namespace tandem::jinja
