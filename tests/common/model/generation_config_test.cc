// generation_config.json: EOS ids (one or a list) merged after config.json's,
// sampling defaults (do_sample=false is greedy), validation, an absent file,
// and defaults filling only the fields a request left unset.
#include "common/model/generation_config.h"

#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Llama-3-8B-Instruct's generation_config.json.
constexpr char kLlama3Instruct[] = R"({
  "bos_token_id": 128000,
  "do_sample": true,
  "eos_token_id": [128001, 128009],
  "max_length": 4096,
  "temperature": 0.6,
  "top_p": 0.9,
  "transformers_version": "4.40.0.dev0"
})";

TEST(GenerationConfigTest, ParsesALlama3InstructConfig) {
  auto g = ParseGenerationConfig(kLlama3Instruct, "gc");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(g->eos_token_ids, ElementsAre(128001, 128009));
  EXPECT_FLOAT_EQ(*g->temperature, 0.6f);
  EXPECT_FLOAT_EQ(*g->top_p, 0.9f);
  EXPECT_FALSE(g->top_k.has_value());
  EXPECT_FALSE(g->repetition_penalty.has_value());
  EXPECT_TRUE(g->has_sampling_defaults());
  // config.json lists 128001 only: <|eot_id|> joins it, once.
  EXPECT_THAT(MergeEosIds({128001}, *g), ElementsAre(128001, 128009));
}

TEST(GenerationConfigTest, SingleEosIdAndDoSampleFalseIsGreedy) {
  auto g = ParseGenerationConfig(R"({"eos_token_id": 2, "do_sample": false, "temperature": 0.7, "top_k": 40,
                                     "repetition_penalty": 1.1})",
                                 "gc");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(g->eos_token_ids, ElementsAre(2));
  EXPECT_EQ(*g->temperature, 0.0f);
  EXPECT_FALSE(g->top_k.has_value());
  EXPECT_FLOAT_EQ(*g->repetition_penalty, 1.1f);
}

TEST(GenerationConfigTest, NoDefaultsInAnEmptyConfig) {
  auto g = ParseGenerationConfig(R"({"eos_token_id": null, "temperature": null})", "gc");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE(g->eos_token_ids.empty());
  EXPECT_FALSE(g->has_sampling_defaults());
  EXPECT_THAT(MergeEosIds({7, 8}, *g), ElementsAre(7, 8));
}

TEST(GenerationConfigTest, RejectsBadValuesNamingTheFieldAndFile) {
  for (const char* bad : {R"([1])", R"({"eos_token_id": "x"})", R"({"eos_token_id": [-1]})",
                          R"({"temperature": -0.1})", R"({"top_p": 0})", R"({"top_p": 1.5})", R"({"top_k": 2.5})",
                          R"({"repetition_penalty": 0})", R"({"temperature": "hot"})", "{oops"}) {
    auto g = ParseGenerationConfig(bad, "/m/generation_config.json");
    ASSERT_FALSE(g.ok()) << bad;
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(g.status().message()), HasSubstr("/m/generation_config.json")) << bad;
  }
}

TEST(GenerationConfigTest, LoadsFromTheModelDirAndIsEmptyWithoutTheFile) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("generation_config_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto none = LoadGenerationConfig(dir.string());
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_sampling_defaults());
  std::ofstream(dir / "generation_config.json") << kLlama3Instruct;
  auto g = LoadGenerationConfig(dir.string());
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(g->eos_token_ids, ElementsAre(128001, 128009));
}

TEST(GenerationConfigTest, DefaultsFillOnlyUnsetFields) {
  GenerationConfig g;
  g.temperature = 0.6f;
  g.top_k = 20;
  g.repetition_penalty = 1.05f;
  float temperature = 0.2f, top_p = 0.5f, repetition_penalty = 1.0f;
  int32_t top_k = 0;
  SamplingFieldsSet set;
  set.temperature = true;  // the request's own 0.2 stays
  ApplySamplingDefaults(g, set, &temperature, &top_p, &top_k, &repetition_penalty);
  EXPECT_EQ(temperature, 0.2f);
  EXPECT_EQ(top_p, 0.5f);  // the model has no top_p default
  EXPECT_EQ(top_k, 20);
  EXPECT_EQ(repetition_penalty, 1.05f);
}

}  // namespace
}  // namespace tandem
