// The ceilings the GPU benchmarks print their figures against, measured
// on the device in the same run (device runs only; CI compiles them).
#pragma once

#include <vector>

#include "absl/status/statusor.h"

namespace tandem::bench {

// Bytes read plus bytes written per second by cudaMemcpyAsync of 2 GiB on
// the current device, timed with events (median of 10). Outside any CUDA
// graph: a memcpy node in a graph runs on a copy engine, ~35% slower on an
// H200, which is no ceiling for a kernel.
absl::StatusOr<double> CopyBandwidth();

// FLOP/s of an 8192^3 bf16 cuBLAS matrix product (fp32 accumulation, bf16
// out) on random data (median of 10).
absl::StatusOr<double> GemmRate();

double Median(std::vector<double> v);

}  // namespace tandem::bench
