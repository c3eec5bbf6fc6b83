// ChatTemplate: loading from a model dir (string and named-list
// chat_template, special tokens as strings or AddedToken objects,
// chat_template.jinja), NOT_FOUND without a template, UNIMPLEMENTED naming
// the construct and the file, and Render's context (messages,
// add_generation_prompt, bos/eos, extra kwargs, raise_exception).
#include "common/chat_template/chat_template.h"

#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

using ::testing::HasSubstr;

class ChatTemplateDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("chat_template_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void Write(const std::string& name, const std::string& text) { std::ofstream(dir_ / name) << text; }

  std::filesystem::path dir_;
};

const char kSimpleTemplate[] =
    "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}";

TEST_F(ChatTemplateDirTest, LoadsAStringTemplateWithAddedTokenObjects) {
  Write("tokenizer_config.json", nlohmann::json{{"chat_template", kSimpleTemplate},
                                                {"bos_token", {{"content", "<s>"}, {"lstrip", false}}},
                                                {"eos_token", "</s>"}}
                                     .dump());
  auto tmpl = ChatTemplate::FromModelDir(dir_.string());
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  EXPECT_EQ(tmpl->bos_token(), "<s>");
  EXPECT_EQ(tmpl->eos_token(), "</s>");
  const nlohmann::json messages = {{{"role", "user"}, {"content", " hi "}}};
  EXPECT_EQ(*tmpl->Render(messages, true), "<s><user>hi</s><assistant>");
  EXPECT_EQ(*tmpl->Render(messages, false), "<s><user>hi</s>");
}

TEST_F(ChatTemplateDirTest, TakesTheDefaultOfANamedTemplateList) {
  Write("tokenizer_config.json",
        nlohmann::json{{"chat_template",
                        {{{"name", "tool_use"}, {"template", "TOOLS"}}, {{"name", "default"}, {"template", "DEFAULT"}}}}}
            .dump());
  auto tmpl = ChatTemplate::FromModelDir(dir_.string());
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  EXPECT_EQ(*tmpl->Render(nlohmann::json::array(), false), "DEFAULT");

  Write("tokenizer_config.json", nlohmann::json{{"chat_template", {{{"name", "tool_use"}, {"template", "T"}}}}}.dump());
  auto missing = ChatTemplate::FromModelDir(dir_.string());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("tool_use"));
}

TEST_F(ChatTemplateDirTest, PrefersChatTemplateJinja) {
  Write("tokenizer_config.json", nlohmann::json{{"chat_template", "OLD"}, {"eos_token", "E"}}.dump());
  Write("chat_template.jinja", "NEW {{ eos_token }}\n");
  auto tmpl = ChatTemplate::FromModelDir(dir_.string());
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  EXPECT_EQ(*tmpl->Render(nlohmann::json::array(), false), "NEW E");
}

TEST_F(ChatTemplateDirTest, NotFoundWithoutATemplate) {
  EXPECT_EQ(ChatTemplate::FromModelDir(dir_.string()).status().code(), absl::StatusCode::kNotFound);
  Write("tokenizer_config.json", nlohmann::json{{"eos_token", "</s>"}}.dump());
  EXPECT_EQ(ChatTemplate::FromModelDir(dir_.string()).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ChatTemplateDirTest, RefusesAnUnsupportedTemplateNamingTheConstructAndTheFile) {
  Write("tokenizer_config.json",
        nlohmann::json{{"chat_template", "{% for m in messages %}\n{{ m.content | wordwrap(10) }}{% endfor %}"}}.dump());
  auto tmpl = ChatTemplate::FromModelDir(dir_.string());
  ASSERT_EQ(tmpl.status().code(), absl::StatusCode::kUnimplemented) << tmpl.status();
  EXPECT_THAT(std::string(tmpl.status().message()), HasSubstr("wordwrap"));
  EXPECT_THAT(std::string(tmpl.status().message()), HasSubstr("tokenizer_config.json"));
  EXPECT_THAT(std::string(tmpl.status().message()), HasSubstr("line 2"));
}

TEST(ChatTemplateRenderTest, ExtraContextAndErrors) {
  auto tmpl = ChatTemplate::FromSource(
      "{% if tools %}{{ tools | tojson }}{% endif %}{% for m in messages %}"
      "{% if m.role not in ['user', 'assistant'] %}{{ raise_exception('bad role ' ~ m.role) }}{% endif %}"
      "{{ m.content }}{% endfor %}{{ bos_token }}",
      "B", "E");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  const nlohmann::json user = {{{"role", "user"}, {"content", "q"}}};
  EXPECT_EQ(*tmpl->Render(user, false, {{"tools", {{{"name", "f"}}}}}), "[{\"name\": \"f\"}]qB");
  // Caller kwargs override the special tokens, as in transformers.
  EXPECT_EQ(*tmpl->Render(user, false, {{"bos_token", "X"}}), "qX");
  auto raised = tmpl->Render({{{"role", "robot"}, {"content", "q"}}}, false);
  EXPECT_EQ(raised.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(raised.status().message()), HasSubstr("bad role robot"));
  EXPECT_EQ(tmpl->Render(nlohmann::json::object(), false).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ChatTemplateRenderTest, OrderedJsonKeepsTheRequestsKeyOrder) {
  auto tmpl = ChatTemplate::FromSource("{{ tools | tojson }}", "", "");
  ASSERT_TRUE(tmpl.ok());
  const std::string tools = R"({"tools": [{"type": "function", "function": {"name": "f"}}]})";
  EXPECT_EQ(*tmpl->Render(nlohmann::ordered_json::array(), false, nlohmann::ordered_json::parse(tools)),
            R"([{"type": "function", "function": {"name": "f"}}])");
  EXPECT_EQ(*tmpl->Render(nlohmann::json::array(), false, nlohmann::json::parse(tools)),
            R"([{"function": {"name": "f"}, "type": "function"}])");  // nlohmann::json sorts keys
}

TEST(ChatTemplateRenderTest, CopiesShareTheParsedTemplate) {
  auto tmpl = ChatTemplate::FromSource("{{ messages | length }}", "", "");
  ASSERT_TRUE(tmpl.ok());
  ChatTemplate copy = *tmpl;
  EXPECT_EQ(*copy.Render(nlohmann::json::array({1, 2}), false), "2");
}

}  // namespace
}  // namespace tandem
