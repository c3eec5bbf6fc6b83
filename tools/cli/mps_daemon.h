// The CUDA MPS control daemon for a local cluster whose prefill and decode
// workers share one GPU spatially: with MPS, their kernels run at the same
// time (each limited to a share of the SMs by
// CUDA_MPS_ACTIVE_THREAD_PERCENTAGE) instead of time-slicing the GPU.
// The daemon's pipe and log directories are private to the cluster, so
// two clusters on one machine do not share a daemon.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem {

class MpsDaemon {
 public:
  // Starts `nvidia-cuda-mps-control -d` with its directories under
  // `run_dir`. FAILED_PRECONDITION when the control program is not on the
  // PATH (no NVIDIA driver here) or the daemon does not start.
  static absl::StatusOr<std::unique_ptr<MpsDaemon>> Start(const std::string& run_dir);
  // Asks the daemon to quit (after the cluster's processes ended).
  ~MpsDaemon();

  // The variables every CUDA process of the cluster needs to reach it.
  std::vector<std::pair<std::string, std::string>> ClientEnv() const;

 private:
  MpsDaemon(std::string pipe_dir, std::string log_dir)
      : pipe_dir_(std::move(pipe_dir)), log_dir_(std::move(log_dir)) {}
  std::string pipe_dir_, log_dir_;
};

// The environment of one worker: the daemon's, plus its SM share
// (`sm_percent` in [1, 100]; 0 leaves it unlimited).
std::vector<std::pair<std::string, std::string>> MpsWorkerEnv(const MpsDaemon& daemon, int sm_percent);

}  // namespace tandem
