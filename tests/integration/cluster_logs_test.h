// The base of a cluster test's fixture: the cluster's processes log into
// logs_ (the fixture's, so the logs outlive the test's cluster), and a
// failing test prints the last lines of each log.
#pragma once

#include <cstdio>

#include "gtest/gtest.h"
#include "tests/integration/cluster_test_util.h"
#include "tests/testing/temp_dir.h"

namespace tandem::testing {

class ClusterLogsTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (HasFailure()) std::printf("%s", LogTails(logs_.str()).c_str());
  }

  TempDir logs_;  // LocalClusterOptions::log_dir
};

}  // namespace tandem::testing
