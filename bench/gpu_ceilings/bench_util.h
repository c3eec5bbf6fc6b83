// What the GPU benchmarks share besides the ceilings: a check that ends
// the run with the failed expression (a benchmark has no caller to hand a
// status to), comma-separated number lists from flags, and the median
// time of a CUDA graph's replays. Device runs only; CI compiles them.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

// glibc's name of the running program, for the message.
extern "C" char* program_invocation_short_name;

#define BENCH_CHECK(expr)                                                                         \
  do {                                                                                            \
    if (!(expr)) {                                                                                \
      std::fprintf(stderr, "%s: %s failed (%s:%d)\n", program_invocation_short_name, #expr, __FILE__, \
                   __LINE__);                                                                     \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)
#define CUDA_OK(expr) BENCH_CHECK((expr) == cudaSuccess)

namespace tandem::bench {

// "1,64,256" -> {1, 64, 256}; empty items are skipped; ends the run on
// anything that is not an integer.
std::vector<int64_t> ParseInts(std::string_view list);

// Median seconds per replay of the CUDA graph that `enqueue` records on
// `stream` (the first replay warms up); an error when `enqueue` or a CUDA
// call fails.
absl::StatusOr<double> GraphReplaySeconds(cudaStream_t stream, const std::function<absl::Status()>& enqueue,
                                          int repeats);

}  // namespace tandem::bench
