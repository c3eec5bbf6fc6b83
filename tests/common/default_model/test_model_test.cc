// The random test model: the same bytes on every call, loadable through the
// regular checkpoint path, a tokenizer whose merges make words tokens.
#include "common/default_model/test_model.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/engine/model_loader.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace tandem {
namespace {

std::string ReadAll(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

TEST(TestModelTest, IsByteIdenticalEveryTime) {
  testing::TempDir a, b;
  ASSERT_TRUE(WriteTestModel(a.str()).ok());
  ASSERT_TRUE(WriteTestModel(b.str()).ok());
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}) {
    const std::string x = ReadAll(a.path() / f);
    EXPECT_FALSE(x.empty()) << f;
    EXPECT_EQ(x, ReadAll(b.path() / f)) << f;
  }
  EXPECT_EQ(ReadAll(a.path() / "tokenizer.json"), TestModelTokenizerJson());
}

TEST(TestModelTest, LoadsThroughTheRegularCheckpointPath) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteTestModel(dir.str()).ok());
  auto m = LoadModel(ModelSource{dir.str(), false, 0});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->config.architecture, "LlamaForCausalLM");
  EXPECT_EQ(m->config.vocab_size, m->tokenizer->vocab_size());
  EXPECT_LT(m->config.num_key_value_heads, m->config.num_attention_heads);  // GQA
  const std::string text = "The quick brown fox jumps over the lazy dog.";
  const auto ids = m->tokenizer->Encode(text, true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], m->config.bos_token_id);
  EXPECT_LT(ids.size(), text.size() / 2) << "merges should make common words single tokens";
  EXPECT_EQ(m->tokenizer->Decode(ids, true), text);
}

}  // namespace
}  // namespace tandem
