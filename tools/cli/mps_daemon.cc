#include "tools/cli/mps_daemon.h"

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/util/logging.h"

namespace tandem {
namespace fs = std::filesystem;

namespace {

// Runs `command` under sh with the daemon's directories set; its exit code.
int RunWithDirs(const std::string& pipe_dir, const std::string& log_dir, const std::string& command) {
  const std::string line = absl::StrCat("CUDA_MPS_PIPE_DIRECTORY='", pipe_dir, "' CUDA_MPS_LOG_DIRECTORY='", log_dir,
                                        "' ", command);
  return std::system(line.c_str());
}

}  // namespace

absl::StatusOr<std::unique_ptr<MpsDaemon>> MpsDaemon::Start(const std::string& run_dir) {
  if (std::system("command -v nvidia-cuda-mps-control > /dev/null 2>&1") != 0) {
    return absl::FailedPreconditionError(
        "--mps needs nvidia-cuda-mps-control (from the NVIDIA driver) on the PATH; it is not here");
  }
  const std::string pipe = (fs::path(run_dir) / "mps-pipe").string();
  const std::string log = (fs::path(run_dir) / "mps-log").string();
  std::error_code ec;
  fs::create_directories(pipe, ec);
  fs::create_directories(log, ec);
  if (RunWithDirs(pipe, log, "nvidia-cuda-mps-control -d") != 0) {
    return absl::FailedPreconditionError(absl::StrCat("nvidia-cuda-mps-control -d failed; see ", log));
  }
  TANDEM_LOG(INFO) << "CUDA MPS control daemon started (pipes in " << pipe << ")";
  return std::unique_ptr<MpsDaemon>(new MpsDaemon(pipe, log));
}

MpsDaemon::~MpsDaemon() {
  if (RunWithDirs(pipe_dir_, log_dir_, "sh -c 'echo quit | nvidia-cuda-mps-control'") != 0) {
    TANDEM_LOG(WARNING) << "the CUDA MPS control daemon did not acknowledge quit; see " << log_dir_;
  }
}

std::vector<std::pair<std::string, std::string>> MpsDaemon::ClientEnv() const {
  return {{"CUDA_MPS_PIPE_DIRECTORY", pipe_dir_}, {"CUDA_MPS_LOG_DIRECTORY", log_dir_}};
}

std::vector<std::pair<std::string, std::string>> MpsWorkerEnv(const MpsDaemon& daemon, int sm_percent) {
  std::vector<std::pair<std::string, std::string>> env = daemon.ClientEnv();
  if (sm_percent > 0) env.emplace_back("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", std::to_string(sm_percent));
  return env;
}

}  // namespace tandem
