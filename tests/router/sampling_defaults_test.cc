// The router fills the sampling fields a request leaves unset (proto3
// presence) with the model's generation_config.json defaults and keeps
// every field the request set, even to the proto default value.
#include "gtest/gtest.h"
#include "router/generation_service.h"

namespace tandem::router {
namespace {

GenerationConfig Llama3InstructLike() {
  GenerationConfig g;
  g.eos_token_ids = {128001, 128009};
  g.temperature = 0.6f;
  g.top_p = 0.9f;
  g.top_k = 50;
  return g;
}

TEST(SamplingDefaultsTest, UnsetFieldsTakeTheModelDefaults) {
  v1::SamplingParameters p;
  ApplyModelSamplingDefaults(Llama3InstructLike(), &p);
  ASSERT_TRUE(p.has_temperature());
  EXPECT_FLOAT_EQ(p.temperature(), 0.6f);
  EXPECT_FLOAT_EQ(p.top_p(), 0.9f);
  EXPECT_EQ(p.top_k(), 50);
  EXPECT_FALSE(p.has_repetition_penalty());  // the model has none
}

TEST(SamplingDefaultsTest, FieldsTheRequestSetAreKept) {
  v1::SamplingParameters p;
  p.set_temperature(0.0f);  // greedy, explicitly
  p.set_top_k(0);           // disabled, explicitly
  ApplyModelSamplingDefaults(Llama3InstructLike(), &p);
  EXPECT_EQ(p.temperature(), 0.0f);
  EXPECT_EQ(p.top_k(), 0);
  EXPECT_FLOAT_EQ(p.top_p(), 0.9f);
}

TEST(SamplingDefaultsTest, NoDefaultsChangeNothing) {
  v1::SamplingParameters p;
  p.set_seed(3);
  ApplyModelSamplingDefaults(GenerationConfig{}, &p);
  EXPECT_FALSE(p.has_temperature());
  EXPECT_FALSE(p.has_top_p());
  EXPECT_FALSE(p.has_top_k());
}

}  // namespace
}  // namespace tandem::router
