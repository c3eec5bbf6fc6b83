// Kernel launches with programmatic dependent launch (PDL, Hopper): a
// kernel launched this way may be scheduled while the previous kernel on
// the stream is still finishing, so the gap between the two (launch
// latency, the previous grid's tail) is hidden. A decode step is ~300
// small kernels, where those gaps add up to a large share of the step.
//
// The contract, for every kernel launched with LaunchPdl: it calls
// WaitForPrecedingGrid() before its first read of anything an earlier
// kernel wrote and before its first global write (the previous kernel may
// still be reading what it overwrites). Only what no kernel of the pass
// writes may be read before that: weights, and the pass's plan (tables,
// positions, slots), which is copied in before the pass's first kernel,
// a full dependency every later kernel inherits; and K/V rows of earlier
// steps (decode attention). Waiting
// means the previous grid has completed and its writes are visible, and
// since that grid waited on its own predecessor, on every earlier one.
// Kernels call AllowDependentLaunch() once their own inputs are settled so
// that the next kernel can start its own preamble.
//
// TANDEM_CUDA_PDL=0 launches the same kernels the ordinary way (for
// measuring what PDL buys); results are identical either way.
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>

namespace tandem::cuda {

__device__ inline void WaitForPrecedingGrid() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ inline void AllowDependentLaunch() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }

// Starts pulling `bytes` (a multiple of 16, 16-byte aligned) into L2.
__device__ inline void PrefetchL2(const void* p, uint32_t bytes) {
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
}

inline bool PdlEnabled() {
  static const bool enabled = [] {
    const char* e = std::getenv("TANDEM_CUDA_PDL");
    return e == nullptr || std::strcmp(e, "0") != 0;
  }();
  return enabled;
}

// Launch errors surface through cudaGetLastError(), as for <<<...>>>.
template <typename... Params, typename... Args>
void LaunchPdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attr;
  config.numAttrs = PdlEnabled() ? 1 : 0;
  cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...);
}

}  // namespace tandem::cuda
