// LoadModel reads generation_config.json beside config.json: its EOS ids
// (a Llama-3-Instruct-like list) join the model's, so ModelEosIds (what
// the decode worker and LocalGenerator stop on) includes them, and its
// sampling defaults come with the model for `tandem generate`.
#include <fstream>

#include "common/default_model/test_model.h"
#include "common/engine/local_generator.h"
#include "common/engine/model_loader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace tandem {
namespace {

using ::testing::Contains;

TEST(ModelLoaderGenerationConfigTest, EosIdsAndDefaultsComeWithTheModel) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteTestModel(dir.str()).ok());
  auto plain = LoadModel(ModelSource{dir.str(), false, 0});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->generation.has_sampling_defaults());
  const std::vector<int32_t> model_eos = ModelEosIds(plain->config, *plain->tokenizer);
  ASSERT_FALSE(model_eos.empty());
  const int32_t end_of_turn = 5;  // stands in for <|eot_id|>
  ASSERT_THAT(model_eos, ::testing::Not(Contains(end_of_turn)));

  std::ofstream(dir.str() + "/generation_config.json")
      << R"({"do_sample": true, "eos_token_id": [)" << model_eos[0] << ", " << end_of_turn
      << R"(], "temperature": 0.6, "top_p": 0.9})";
  auto with_config = LoadModel(ModelSource{dir.str(), false, 0});
  ASSERT_TRUE(with_config.ok()) << with_config.status();
  const std::vector<int32_t> eos = ModelEosIds(with_config->config, *with_config->tokenizer);
  EXPECT_THAT(eos, Contains(model_eos[0]));
  EXPECT_THAT(eos, Contains(end_of_turn));
  EXPECT_EQ(std::count(eos.begin(), eos.end(), model_eos[0]), 1);
  EXPECT_FLOAT_EQ(*with_config->generation.temperature, 0.6f);
  EXPECT_FLOAT_EQ(*with_config->generation.top_p, 0.9f);

  std::ofstream(dir.str() + "/generation_config.json") << R"({"top_p": 7})";
  auto bad = LoadModel(ModelSource{dir.str(), false, 0});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
}

}  // namespace
}  // namespace tandem
