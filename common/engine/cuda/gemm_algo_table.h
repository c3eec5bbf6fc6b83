// Tuned cuBLASLt algorithms for the engine's GEMMs, by shape: what
// `tandem-gemm-tune` measured fastest on one kind of GPU, written to a
// JSON file that the CUDA backend loads at start (vLLM ships per-device
// kernel configs the same way). cuBLASLt's heuristic picks well for big
// prefill GEMMs but not for the 8..256-row decode products, where the
// right tile and split-K are worth 10-40% (docs/benchmarks.md).
//
// A static table, not tuning at start: timing picks differ from run to
// run when two algorithms are close, and different algorithms round
// differently, so a prefill worker and a single-process engine tuning
// for themselves could produce different tokens. From one file, every
// process runs the same algorithm for the same shape.
//
// Plain C++ (no CUDA): the CUDA side (LtGemm) turns a GemmAlgo into a
// cublasLtMatmulAlgo_t and checks it against the real shape.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>

#include "absl/status/statusor.h"

namespace tandem {

// One cuBLASLt algorithm: its id and the configuration attributes that
// select a variant of it (cublasLtMatmulAlgoConfigAttributes_t).
struct GemmAlgo {
  int32_t id = 0;
  uint32_t tile = 0;
  uint32_t stages = 0;
  int32_t splitk = 1;
  uint32_t reduction = 0;
  uint32_t swizzle = 0;
  uint32_t custom = 0;
  uint16_t inner_shape = 0;
  uint16_t cluster_shape = 0;
  bool operator==(const GemmAlgo&) const = default;
};

// y[rows][n] = x[rows][k] . w[n][k]^T with bf16 inputs, fp32 accumulation
// and a bf16 or fp32 y.
struct GemmShape {
  int64_t n = 0, k = 0;
  bool out_f32 = false;
  auto operator<=>(const GemmShape&) const = default;
};

class GemmAlgoTable {
 public:
  // The file's format:
  //   {"device": "NVIDIA H200", "cublaslt_version": 130100,
  //    "entries": [{"rows": 256, "n": 6144, "k": 4096, "out": "f32",
  //                 "algo": {"id": 66, "tile": 20, ...}, "us": 31.0,
  //                 "heuristic_us": 35.6}, ...]}
  // "us" and "heuristic_us" are what the tuner measured (kept for people;
  // ignored here).
  static absl::StatusOr<GemmAlgoTable> Parse(std::string_view json);
  static absl::StatusOr<GemmAlgoTable> Load(const std::string& path);

  // Records `algo` as the one for `rows` rows of `shape`, with its times.
  void Set(int64_t rows, const GemmShape& shape, const GemmAlgo& algo, double us = 0, double heuristic_us = 0);

  // The algorithm tuned for the smallest row count >= rows of `shape`, or
  // for its largest row count when rows is beyond them: GEMM shapes change
  // tile choice slowly, so a bucket's algorithm serves the rows below it.
  // Empty when the shape was not tuned.
  std::optional<GemmAlgo> Find(int64_t rows, const GemmShape& shape) const;

  std::string ToJson() const;
  size_t size() const;

  std::string device;            // cudaDeviceProp::name the table was tuned on
  int64_t cublaslt_version = 0;  // cublasLtGetVersion() there

 private:
  struct Entry {
    GemmAlgo algo;
    double us = 0, heuristic_us = 0;
  };
  std::map<GemmShape, std::map<int64_t, Entry>> entries_;  // shape -> rows -> entry
};

}  // namespace tandem
