// `--help` on every binary lists the binary's own flags and the shared ones
// it uses (abseil's default lists only flags from a file named after the
// binary, so tandem-router printed "No flags matched."), and not another
// binary's flags.
#include <cstdio>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "common/util/flags_usage.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/paths.h"

namespace tandem {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct HelpCase {
  const char* binary;
  bool needs_cuda;  // built only with the CUDA backend
  std::vector<const char*> listed;
  std::vector<const char*> not_listed;
};

// Names the case in test listings (CTest shows GetParam()).
void PrintTo(const HelpCase& c, std::ostream* os) { *os << c.binary; }

std::string RunHelp(const std::string& path) {
  FILE* f = popen((path + " --help 2>&1").c_str(), "r");
  if (f == nullptr) return "";
  std::string out;
  char buf[65536];
  while (size_t n = fread(buf, 1, sizeof buf, f)) out.append(buf, n);
  pclose(f);
  return out;
}

class HelpTest : public ::testing::TestWithParam<HelpCase> {};

TEST_P(HelpTest, ListsTheBinarysOwnFlags) {
  const HelpCase& c = GetParam();
  const std::string path = testing::BinaryDir() + "/bin/" + c.binary;
  if (!std::filesystem::exists(path)) {
    if (c.needs_cuda) GTEST_SKIP() << c.binary << " is built only with CUDA";
    FAIL() << path << " was not built";
  }
  const std::string help = RunHelp(path);
  EXPECT_THAT(help, Not(HasSubstr("No flags matched"))) << c.binary;
  for (const char* flag : c.listed) EXPECT_THAT(help, HasSubstr(std::string("--") + flag)) << c.binary;
  for (const char* flag : c.not_listed) {
    EXPECT_THAT(help, Not(HasSubstr(std::string("--") + flag + " "))) << c.binary;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Binaries, HelpTest,
    ::testing::Values(
        // Own flags, plus shared ones from common/ (TLS, API token, gRPC limits, scheduler).
        HelpCase{"tandem-router", false, {"placement", "http_listen", "served_model_name", "tls_cert"}, {"role"}},
        HelpCase{"tandem-prefill-worker", false, {"kv_transfer_finish_timeout_seconds", "router", "max_batch_size"},
                 {"placement"}},
        HelpCase{"tandem-decode-worker", false, {"role", "router", "max_batch_size"}, {"placement"}},
        HelpCase{"tandem", false, {"temperature", "max_new_tokens", "prefill", "aggregated"}, {"placement"}},
        HelpCase{"tandem-bench", false, {"router", "endpoint", "api_key"}, {"placement"}},
        HelpCase{"tandem-gemv-bench", true, {"blocks_per_sm", "repeats"}, {}},
        HelpCase{"tandem-transfer-bench", true, {"concurrent_transfers"}, {}},
        HelpCase{"tandem-engine-bench", true, {"gpu_memory_fraction"}, {}},
        HelpCase{"tandem-gemm-tune", true, {"rows", "candidates"}, {}}),
    [](const ::testing::TestParamInfo<HelpCase>& info) {
      std::string name = info.param.binary;
      for (char& ch : name) {
        if (ch == '-') ch = '_';
      }
      return name;
    });

TEST(FlagFileMatchesTest, OwnFoldersAndCommonOnly) {
  const std::vector<std::string> router = {"router/"};
  EXPECT_TRUE(FlagFileMatches("/src/tandem/router/router_main.cc", router));
  EXPECT_TRUE(FlagFileMatches("router/router_main.cc", router));
  EXPECT_TRUE(FlagFileMatches("/src/tandem/common/rpc/tls_flags.cc", router));
  EXPECT_FALSE(FlagFileMatches("/src/tandem/decode_worker/decode_worker_main.cc", router));
  EXPECT_FALSE(FlagFileMatches("/usr/include/absl/flags/internal/flag.cc", router));
}

}  // namespace
}  // namespace tandem
