// The `tandem` command line as users run it: generate streams JSON lines
// matching the engine, bad checkpoints fail with a message naming the
// problem, write-default-model writes a loadable checkpoint.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/default_model/test_model.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/paths.h"
#include "tests/testing/temp_dir.h"

namespace tandem {
namespace {

struct Result {
  int exit_code = -1;
  std::string out;  // stdout and stderr together
};

Result RunTandem(const std::string& args) {
  const std::string cmd = testing::BinaryDir() + "/bin/tandem " + args + " 2>&1";
  Result r;
  FILE* f = popen(cmd.c_str(), "r");
  if (f == nullptr) return r;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, f)) r.out.append(buf, n);
  const int status = pclose(f);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(WriteTestModel(model_.str()).ok()); }
  testing::TempDir model_;
};

struct Generated {
  std::vector<int> tokens;
  std::string finish_reason;
};

// One prompt's tokens and finish reason from `generate --output=jsonl`.
Generated ParseGenerated(const std::string& out) {
  Generated g;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] != '{') continue;  // log lines
    nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("token")) g.tokens.push_back(j["token"]);
    if (j.contains("finish_reason")) g.finish_reason = j["finish_reason"];
  }
  return g;
}

// generation_config.json beside the checkpoint: do_sample=false makes an
// unseeded run without --temperature greedy, and its eos_token_id list
// (Llama 3 Instruct style) stops generation at any of its ids.
TEST_F(CliTest, GenerateAppliesTheModelsGenerationConfig) {
  const std::string base = absl::StrCat("generate --model=", model_.str(), " --output=jsonl --max_new_tokens=12 ");
  Result greedy = RunTandem(base + "--ignore_eos --temperature=0 'Hello there'");
  ASSERT_EQ(greedy.exit_code, 0) << greedy.out;
  const Generated expected = ParseGenerated(greedy.out);
  ASSERT_EQ(expected.tokens.size(), 12u) << greedy.out;

  std::ofstream(model_.path() / "generation_config.json") << R"({"do_sample": false, "temperature": 0.9})";
  Result defaulted = RunTandem(base + "--ignore_eos 'Hello there'");
  ASSERT_EQ(defaulted.exit_code, 0) << defaulted.out;
  EXPECT_EQ(ParseGenerated(defaulted.out).tokens, expected.tokens);

  // The 5th greedy token becomes an end-of-turn id next to an id never produced.
  const int end_of_turn = expected.tokens[4];
  const size_t first = std::find(expected.tokens.begin(), expected.tokens.end(), end_of_turn) - expected.tokens.begin();
  std::ofstream(model_.path() / "generation_config.json")
      << R"({"do_sample": false, "eos_token_id": [0, )" << end_of_turn << "]}";
  Result stopped = RunTandem(base + "'Hello there'");
  ASSERT_EQ(stopped.exit_code, 0) << stopped.out;
  const Generated got = ParseGenerated(stopped.out);
  EXPECT_EQ(got.finish_reason, "stop") << stopped.out;
  EXPECT_LE(got.tokens.size(), first + 1) << stopped.out;
  EXPECT_TRUE(std::equal(got.tokens.begin(), got.tokens.end(), expected.tokens.begin())) << stopped.out;
}

TEST_F(CliTest, GenerateStreamsJsonLinesAndIsReproducibleWithASeed) {
  const std::string args = absl::StrCat("generate --model=", model_.str(),
                                        " --output=jsonl --max_new_tokens=8 --ignore_eos --temperature=0.8 "
                                        "--seed=5 --logprobs=2 'Hello there' 'Second prompt'");
  Result a = RunTandem(args);
  ASSERT_EQ(a.exit_code, 0) << a.out;
  std::vector<int> tokens(2, 0), finishes(2, 0);
  std::istringstream in(a.out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] != '{') continue;  // log lines
    nlohmann::json j = nlohmann::json::parse(line);
    const int req = j["request"];
    if (j.contains("token")) {
      ++tokens[req];
      EXPECT_TRUE(j.contains("logprob"));
      EXPECT_LE(j["logprob"].get<double>(), 0.0);
    }
    if (j.contains("finish_reason")) {
      ++finishes[req];
      EXPECT_EQ(j["finish_reason"], "length");
      EXPECT_EQ(j["completion_tokens"], 8);
    }
  }
  EXPECT_EQ(tokens, (std::vector<int>{8, 8}));
  EXPECT_EQ(finishes, (std::vector<int>{1, 1}));
  Result b = RunTandem(args);
  auto json_lines = [](const std::string& s) {
    std::string out;
    std::istringstream in(s);
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty() && line[0] == '{') out += line + "\n";
    }
    return out;
  };
  EXPECT_EQ(json_lines(a.out), json_lines(b.out));
}

TEST_F(CliTest, BadCheckpointsFailWithTheProblemNamed) {
  namespace fs = std::filesystem;
  // A missing tensor.
  testing::TempDir broken;
  fs::copy(model_.path(), broken.path(), fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  {
    std::ifstream in(broken.path() / "model.safetensors", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    std::ofstream(broken.path() / "model.safetensors", std::ios::binary | std::ios::trunc) << bytes.substr(0, 100);
  }
  Result truncated = RunTandem(absl::StrCat("generate --model=", broken.str(), " hi"));
  EXPECT_NE(truncated.exit_code, 0);
  EXPECT_NE(truncated.out.find("model.safetensors"), std::string::npos) << truncated.out;
  EXPECT_NE(truncated.out.find("truncated header"), std::string::npos) << truncated.out;

  // An unknown architecture.
  std::ifstream cin(model_.path() / "config.json");
  std::string config((std::istreambuf_iterator<char>(cin)), std::istreambuf_iterator<char>());
  const size_t at = config.find("LlamaForCausalLM");
  config.replace(at, std::string("LlamaForCausalLM").size(), "GPTBigCodeForCausalLM");
  testing::TempDir arch;
  fs::copy(model_.path(), arch.path(), fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  std::ofstream(arch.path() / "config.json", std::ios::trunc) << config;
  Result unknown = RunTandem(absl::StrCat("generate --model=", arch.str(), " hi"));
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE(unknown.out.find("GPTBigCodeForCausalLM"), std::string::npos) << unknown.out;

  Result missing = RunTandem("generate --model=/no/such/dir hi");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.out.find("/no/such/dir"), std::string::npos) << missing.out;
}

TEST_F(CliTest, DummyWeightsNeedOnlyConfigAndTokenizer) {
  namespace fs = std::filesystem;
  testing::TempDir dir;
  fs::copy_file(model_.path() / "config.json", dir.path() / "config.json");
  fs::copy_file(model_.path() / "tokenizer.json", dir.path() / "tokenizer.json");
  Result r = RunTandem(absl::StrCat("generate --model=", dir.str(), " --dummy_weights --max_new_tokens=4 hi"));
  EXPECT_EQ(r.exit_code, 0) << r.out;
  Result no_weights = RunTandem(absl::StrCat("generate --model=", dir.str(), " hi"));
  EXPECT_NE(no_weights.exit_code, 0);
  EXPECT_NE(no_weights.out.find("no *.safetensors"), std::string::npos) << no_weights.out;
}

TEST_F(CliTest, WriteDefaultModelWritesALoadableCheckpoint) {
  testing::TempDir out;
  Result w = RunTandem(absl::StrCat("write-default-model --out=", out.str()));
  ASSERT_EQ(w.exit_code, 0) << w.out;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}) {
    EXPECT_TRUE(std::filesystem::exists(out.path() / f)) << f;
  }
  Result g = RunTandem(absl::StrCat("generate --model=", out.str(), " --max_new_tokens=3 hello"));
  EXPECT_EQ(g.exit_code, 0) << g.out;
  EXPECT_EQ(RunTandem("no-such-command").exit_code, 2);
}

TEST_F(CliTest, UpRefusesMpsSettingsThatCannotWork) {
  Result no_mps = RunTandem("up --prefill_sm_percent=60");
  EXPECT_EQ(no_mps.exit_code, 2);
  EXPECT_NE(no_mps.out.find("need --mps"), std::string::npos) << no_mps.out;
  Result too_big = RunTandem("up --mps --decode_sm_percent=160");
  EXPECT_EQ(too_big.exit_code, 2);
  EXPECT_NE(too_big.out.find("[0, 100]"), std::string::npos) << too_big.out;
  // With no control program on the PATH, --mps says so before starting anything.
  if (std::system("command -v nvidia-cuda-mps-control > /dev/null 2>&1") != 0) {
    Result direct = RunTandem("up --mps --listen=127.0.0.1:0");
    EXPECT_EQ(direct.exit_code, 1);
    EXPECT_NE(direct.out.find("needs nvidia-cuda-mps-control"), std::string::npos) << direct.out;
  }
}

// The plumbing of --mps: the cluster starts its own daemon (private pipe
// directory), every worker gets the daemon's directories and its role's SM
// share in its environment, and the daemon is told to quit at the end. The
// control program is a stand-in script on the PATH that records how it was
// called (CI has no NVIDIA driver); the workers run on the CPU and ignore
// the variables, as CUDA-less processes do.
TEST_F(CliTest, UpWithMpsStartsADaemonAndGivesEachWorkerItsShare) {
  namespace fs = std::filesystem;
  testing::TempDir dir;
  const fs::path record = dir.path() / "mps.calls";
  {
    std::ofstream fake(dir.path() / "nvidia-cuda-mps-control");
    fake << "#!/bin/sh\n"
         << "if [ \"$1\" = -d ]; then echo \"start $CUDA_MPS_PIPE_DIRECTORY\" >> " << record << "; exit 0; fi\n"
         << "read cmd; echo \"$cmd $CUDA_MPS_PIPE_DIRECTORY\" >> " << record << "\n";
  }
  fs::permissions(dir.path() / "nvidia-cuda-mps-control", fs::perms::owner_all);
  const fs::path logs = dir.path() / "logs";
  fs::create_directories(logs);
  const std::string cmd = absl::StrCat("PATH=", dir.str(), ":$PATH ", testing::BinaryDir(),
                                       "/bin/tandem up --mps --prefill_sm_percent=60 --decode_sm_percent=35 --worker_args=--num_threads=1 "
                                       "--listen=127.0.0.1:0 --model=", model_.str(), " --log_dir=", logs.string(),
                                       " > ", (dir.path() / "up.out").string(), " 2>&1 & echo $!");
  FILE* f = popen(cmd.c_str(), "r");
  ASSERT_NE(f, nullptr);
  int up_pid = 0;
  ASSERT_EQ(fscanf(f, "%d", &up_pid), 1);
  pclose(f);
  auto read = [](const fs::path& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  for (int i = 0; i < 600 && read(dir.path() / "up.out").find("tandem is up") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_NE(read(dir.path() / "up.out").find("tandem is up"), std::string::npos) << read(dir.path() / "up.out");
  // Each worker's environment, from /proc: found by the pid its log names.
  auto env_of = [&](const std::string& name) {
    const std::string out = read(dir.path() / "up.out");
    const size_t at = out.find(absl::StrCat("started ", name, " (pid "));
    if (at == std::string::npos) return std::string();
    const int pid = std::atoi(out.c_str() + at + name.size() + 14);
    std::string env = read(absl::StrCat("/proc/", pid, "/environ"));
    std::replace(env.begin(), env.end(), '\0', '\n');
    return env;
  };
  const std::string prefill = env_of("prefill0"), decode = env_of("decode0");
  EXPECT_NE(prefill.find("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=60\n"), std::string::npos) << prefill;
  EXPECT_NE(decode.find("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=35\n"), std::string::npos) << decode;
  EXPECT_NE(prefill.find("CUDA_MPS_PIPE_DIRECTORY="), std::string::npos);
  // --worker_args reach every worker's command line.
  const std::string up = read(dir.path() / "up.out");
  for (const char* w : {"started prefill0", "started decode0"}) {
    const size_t at = up.find(w);
    ASSERT_NE(at, std::string::npos) << up;
    EXPECT_NE(up.substr(at, up.find('\n', at) - at).find("--num_threads=1"), std::string::npos) << up;
  }
  kill(up_pid, SIGINT);
  // `up` is not our child (the shell started it): wait for it to be gone.
  for (int i = 0; i < 600 && kill(up_pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const std::string calls = read(record);
  EXPECT_EQ(calls.rfind("start ", 0), 0u) << calls;
  EXPECT_NE(calls.find("\nquit "), std::string::npos) << calls;
}

}  // namespace
}  // namespace tandem
