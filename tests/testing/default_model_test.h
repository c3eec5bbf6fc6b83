// A gtest base for suites that run a real model on the CPU: the random test
// model (common/default_model/test_model.h, not the trained default model,
// which may end a story before max_new_tokens) is written to a temporary
// directory and loaded once per suite (the engine, loop and generator tests
// all start from it).
#pragma once

#include "common/default_model/test_model.h"
#include "common/engine/model_loader.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace tandem::testing {

class DefaultModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    ASSERT_TRUE(WriteTestModel(dir_->str()).ok());
    auto m = LoadModel(ModelSource{dir_->str(), false, 0});
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = new LoadedModel(std::move(*m));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete dir_;
    model_ = nullptr;
    dir_ = nullptr;
  }

  static inline TempDir* dir_ = nullptr;
  static inline LoadedModel* model_ = nullptr;
};

}  // namespace tandem::testing
