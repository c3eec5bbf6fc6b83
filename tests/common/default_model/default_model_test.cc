// The built-in default model is the trained one committed under
// common/default_model/trained/: WriteDefaultModel and EnsureDefaultModel
// write exactly those bytes, it loads through the regular checkpoint path
// (what `tandem up` with no --model serves), and its greedy continuation of
// "Once upon a time" is English made of the training corpus's words (the
// random test model's is not, which is what gives the check its power).
#include "common/default_model/default_model.h"

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_join.h"
#include "common/default_model/test_model.h"
#include "common/engine/local_generator.h"
#include "common/engine/model_loader.h"
#include "gtest/gtest.h"
#include "tests/testing/paths.h"
#include "tests/testing/temp_dir.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

std::string ReadAll(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

fs::path CommittedDir() { return fs::path(testing::SourceDir()) / "common/default_model/trained"; }

// The greedy continuation of `prompt`, `max_new_tokens` long (or to EOS).
// Checks on the way that no KV block outlives the request.
std::string GreedyContinuation(const LoadedModel& model, const std::string& prompt,
                               int max_new_tokens) {
  BackendOptions o;
  o.num_kv_blocks = 64;
  o.block_size = 16;
  o.num_threads = 2;
  auto backend = CreateBackend(model, o);
  EXPECT_TRUE(backend.ok()) << backend.status();
  if (!backend.ok()) return "";
  Engine engine(std::move(*backend));
  GenerationRequest r;
  r.prompt = model.tokenizer->Encode(prompt, true);
  r.sampling.temperature = 0.0f;
  r.stopping.max_new_tokens = max_new_tokens;
  std::string text;
  LocalGenerator generator(engine, *model.tokenizer);
  const std::vector<GenerationRequest> requests = {r};
  absl::Status s = generator.Run(requests, [&](const GenerationEvent& e) { text += e.text; });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(engine.kv_cache().num_used_blocks(), 0) << "leaked KV blocks";
  return text;
}

// The whole words of `text`, lower case; a word cut off at the end of the
// text (no letter may follow it) is left out.
std::vector<std::string> WholeWords(const std::string& text) {
  std::vector<std::string> words;
  std::string w;
  for (char c : text) {
    if (std::isalpha(static_cast<unsigned char>(c))) {
      w += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else if (!w.empty()) {
      words.push_back(w);
      w.clear();
    }
  }
  return words;
}

// Words of `words` that are not in `vocabulary`.
std::vector<std::string> Unknown(const std::vector<std::string>& words,
                                 const std::set<std::string>& vocabulary) {
  std::vector<std::string> out;
  for (const std::string& w : words) {
    if (!vocabulary.count(w)) out.push_back(w);
  }
  return out;
}

TEST(DefaultModelTest, WritesTheCommittedTrainedModel) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteDefaultModel(dir.str()).ok());
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}) {
    const std::string committed = ReadAll(CommittedDir() / f);
    ASSERT_FALSE(committed.empty()) << f;
    EXPECT_TRUE(ReadAll(dir.path() / f) == committed) << f << " differs from the committed file";
  }
}

TEST(DefaultModelTest, LoadsThroughTheRegularCheckpointPath) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteDefaultModel(dir.str()).ok());
  auto m = LoadModel(ModelSource{dir.str(), false, 0});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->config.architecture, "LlamaForCausalLM");
  EXPECT_EQ(m->config.vocab_size, m->tokenizer->vocab_size());
  EXPECT_LT(m->config.num_key_value_heads, m->config.num_attention_heads);  // GQA
  const std::string text = "Once upon a time, there was a little girl named Lily.";
  const auto ids = m->tokenizer->Encode(text, true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], m->config.bos_token_id);
  EXPECT_EQ(m->tokenizer->Decode(ids, true), text);
}

TEST(DefaultModelTest, GreedyContinuationOfOnceUponATimeIsEnglishFromTheCorpus) {
  std::set<std::string> vocabulary;
  {
    std::ifstream f(CommittedDir() / "corpus_words.txt");
    for (std::string w; std::getline(f, w);) {
      if (!w.empty()) vocabulary.insert(w);
    }
  }
  ASSERT_GT(vocabulary.size(), 100u) << "corpus_words.txt missing or short";

  testing::TempDir dir;
  ASSERT_TRUE(WriteDefaultModel(dir.str()).ok());
  auto trained = LoadModel(ModelSource{dir.str(), false, 0});
  ASSERT_TRUE(trained.ok()) << trained.status();
  const std::string text = GreedyContinuation(*trained, "Once upon a time", 40);
  const std::vector<std::string> words = WholeWords(text);
  EXPECT_GE(words.size(), 8u) << text;
  EXPECT_TRUE(Unknown(words, vocabulary).empty())
      << "not English from the corpus: " << absl::StrJoin(Unknown(words, vocabulary), " ")
      << "\nin: " << text;

  // The same check finds the random test model's continuation is not.
  testing::TempDir random_dir;
  ASSERT_TRUE(WriteTestModel(random_dir.str()).ok());
  auto random = LoadModel(ModelSource{random_dir.str(), false, 0});
  ASSERT_TRUE(random.ok()) << random.status();
  const std::string gibberish = GreedyContinuation(*random, "Once upon a time", 40);
  const std::vector<std::string> random_words = WholeWords(gibberish);
  EXPECT_FALSE(random_words.size() >= 8 && Unknown(random_words, vocabulary).empty()) << gibberish;
}

TEST(DefaultModelTest, EnsureDefaultModelWritesOnceIntoTheCache) {
  testing::TempDir cache;
  setenv("TANDEM_CACHE_DIR", cache.str().c_str(), 1);
  auto first = EnsureDefaultModel();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_NE(first->find("default-model-v" + std::to_string(kDefaultModelVersion)), std::string::npos);
  EXPECT_TRUE(ReadAll(fs::path(*first) / "model.safetensors") ==
              ReadAll(CommittedDir() / "model.safetensors"));
  const auto stamp = fs::last_write_time(fs::path(*first) / "model.safetensors");
  auto second = EnsureDefaultModel();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*first, *second);
  EXPECT_EQ(stamp, fs::last_write_time(fs::path(*second) / "model.safetensors"));
  unsetenv("TANDEM_CACHE_DIR");
}

}  // namespace
}  // namespace tandem
