#include "bench/gpu_ceilings/bench_util.h"

#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/gpu_ceilings/gpu_ceilings.h"

namespace tandem::bench {
namespace {

absl::Status Cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

}  // namespace

std::vector<int64_t> ParseInts(std::string_view list) {
  std::vector<int64_t> v;
  for (absl::string_view p : absl::StrSplit(absl::string_view(list.data(), list.size()), ',', absl::SkipEmpty())) {
    int64_t x = 0;
    if (!absl::SimpleAtoi(p, &x)) {
      std::fprintf(stderr, "%s: '%s' in '%s' is not an integer\n", program_invocation_short_name,
                   std::string(p).c_str(), std::string(list).c_str());
      std::exit(1);
    }
    v.push_back(x);
  }
  return v;
}

absl::StatusOr<double> GraphReplaySeconds(cudaStream_t stream, const std::function<absl::Status()>& enqueue,
                                          int repeats) {
  cudaGraph_t graph = nullptr;
  if (absl::Status s = Cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture"); !s.ok()) {
    return s;
  }
  const absl::Status enqueued = enqueue();
  if (absl::Status s = Cuda(cudaStreamEndCapture(stream, &graph), "end capture"); !s.ok()) return s;
  cudaGraphExec_t exec = nullptr;
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  absl::Status s = enqueued;
  if (s.ok()) s = Cuda(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
  if (s.ok()) s = Cuda(cudaEventCreate(&e0), "cudaEventCreate");
  if (s.ok()) s = Cuda(cudaEventCreate(&e1), "cudaEventCreate");
  std::vector<double> t;
  for (int r = 0; s.ok() && r <= repeats; ++r) {
    s = Cuda(cudaEventRecord(e0, stream), "cudaEventRecord");
    if (s.ok()) s = Cuda(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
    if (s.ok()) s = Cuda(cudaEventRecord(e1, stream), "cudaEventRecord");
    if (s.ok()) s = Cuda(cudaEventSynchronize(e1), "cudaEventSynchronize");
    float ms = 0;
    if (s.ok()) s = Cuda(cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime");
    if (s.ok() && r > 0) t.push_back(ms / 1e3);
  }
  if (e1 != nullptr) cudaEventDestroy(e1);
  if (e0 != nullptr) cudaEventDestroy(e0);
  if (exec != nullptr) cudaGraphExecDestroy(exec);
  if (graph != nullptr) cudaGraphDestroy(graph);
  if (!s.ok()) return s;
  return Median(t);
}

}  // namespace tandem::bench
