#include "common/engine/cuda/gemm_algo_table.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "common/util/read_file.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

using Json = nlohmann::json;

// Reads j[name] as an integer in [lo, hi] into *out.
template <typename T>
absl::Status ReadInt(const Json& j, const char* name, int64_t lo, int64_t hi, const std::string& where, T* out) {
  const auto it = j.find(name);
  if (it == j.end() || !it->is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"", name, "\" must be an integer"));
  }
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"", name, "\" ", v, " is not in [", lo, ", ", hi, "]"));
  }
  *out = static_cast<T>(v);
  return absl::OkStatus();
}

absl::StatusOr<GemmAlgo> ParseAlgo(const Json& j, const std::string& where) {
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, ": \"algo\" must be an object"));
  constexpr int64_t kU32 = std::numeric_limits<uint32_t>::max(), kU16 = std::numeric_limits<uint16_t>::max();
  GemmAlgo a;
  TANDEM_RETURN_IF_ERROR(ReadInt(j, "id", 0, std::numeric_limits<int32_t>::max(), where, &a.id));
  TANDEM_RETURN_IF_ERROR(ReadInt(j, "tile", 0, kU32, where, &a.tile));
  TANDEM_RETURN_IF_ERROR(ReadInt(j, "stages", 0, kU32, where, &a.stages));
  TANDEM_RETURN_IF_ERROR(ReadInt(j, "splitk", 1, 1024, where, &a.splitk));
  TANDEM_RETURN_IF_ERROR(ReadInt(j, "reduction", 0, kU32, where, &a.reduction));
  TANDEM_RETURN_IF_ERROR(ReadInt(j, "swizzle", 0, kU32, where, &a.swizzle));
  TANDEM_RETURN_IF_ERROR(ReadInt(j, "custom", 0, kU32, where, &a.custom));
  TANDEM_RETURN_IF_ERROR(ReadInt(j, "inner_shape", 0, kU16, where, &a.inner_shape));
  TANDEM_RETURN_IF_ERROR(ReadInt(j, "cluster_shape", 0, kU16, where, &a.cluster_shape));
  return a;
}

}  // namespace

absl::StatusOr<GemmAlgoTable> GemmAlgoTable::Parse(std::string_view json) {
  const Json j = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("GEMM algorithm table: not a JSON object");
  GemmAlgoTable t;
  if (const auto it = j.find("device"); it != j.end() && it->is_string()) t.device = it->get<std::string>();
  if (const auto it = j.find("cublaslt_version"); it != j.end() && it->is_number_integer()) {
    t.cublaslt_version = it->get<int64_t>();
  }
  const auto entries = j.find("entries");
  if (entries == j.end() || !entries->is_array()) {
    return absl::InvalidArgumentError("GEMM algorithm table: \"entries\" must be an array");
  }
  for (size_t i = 0; i < entries->size(); ++i) {
    const Json& e = (*entries)[i];
    const std::string where = absl::StrCat("GEMM algorithm table entry ", i);
    if (!e.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, ": not an object"));
    int64_t rows = 0;
    GemmShape shape;
    constexpr int64_t kDim = std::numeric_limits<int32_t>::max();
    TANDEM_RETURN_IF_ERROR(ReadInt(e, "rows", 1, kDim, where, &rows));
    TANDEM_RETURN_IF_ERROR(ReadInt(e, "n", 1, kDim, where, &shape.n));
    TANDEM_RETURN_IF_ERROR(ReadInt(e, "k", 1, kDim, where, &shape.k));
    const auto out = e.find("out");
    if (out == e.end() || !out->is_string() || (*out != "f32" && *out != "bf16")) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": \"out\" must be \"f32\" or \"bf16\""));
    }
    shape.out_f32 = *out == "f32";
    const auto algo_json = e.find("algo");
    if (algo_json == e.end()) return absl::InvalidArgumentError(absl::StrCat(where, ": no \"algo\""));
    absl::StatusOr<GemmAlgo> algo = ParseAlgo(*algo_json, where);
    if (!algo.ok()) return algo.status();
    if (t.entries_.count(shape) != 0 && t.entries_[shape].count(rows) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": a second entry for rows ", rows, ", n ", shape.n,
                                                     ", k ", shape.k, ", out ", out->get<std::string>()));
    }
    const double us = e.value("us", 0.0), heuristic_us = e.value("heuristic_us", 0.0);
    t.Set(rows, shape, *algo, us, heuristic_us);
  }
  return t;
}

absl::StatusOr<GemmAlgoTable> GemmAlgoTable::Load(const std::string& path) {
  TANDEM_ASSIGN_OR_RETURN(const std::string text, ReadWholeFile(path));
  absl::StatusOr<GemmAlgoTable> t = Parse(text);
  if (!t.ok()) return absl::Status(t.status().code(), absl::StrCat(path, ": ", t.status().message()));
  return t;
}

void GemmAlgoTable::Set(int64_t rows, const GemmShape& shape, const GemmAlgo& algo, double us, double heuristic_us) {
  entries_[shape][rows] = Entry{algo, us, heuristic_us};
}

std::optional<GemmAlgo> GemmAlgoTable::Find(int64_t rows, const GemmShape& shape) const {
  const auto s = entries_.find(shape);
  if (s == entries_.end() || s->second.empty()) return std::nullopt;
  const auto r = s->second.lower_bound(rows);
  return r != s->second.end() ? r->second.algo : s->second.rbegin()->second.algo;
}

size_t GemmAlgoTable::size() const {
  size_t n = 0;
  for (const auto& [shape, by_rows] : entries_) n += by_rows.size();
  return n;
}

std::string GemmAlgoTable::ToJson() const {
  Json entries = Json::array();
  for (const auto& [shape, by_rows] : entries_) {
    for (const auto& [rows, e] : by_rows) {
      const GemmAlgo& a = e.algo;
      entries.push_back({{"rows", rows},
                         {"n", shape.n},
                         {"k", shape.k},
                         {"out", shape.out_f32 ? "f32" : "bf16"},
                         {"algo",
                          {{"id", a.id},
                           {"tile", a.tile},
                           {"stages", a.stages},
                           {"splitk", a.splitk},
                           {"reduction", a.reduction},
                           {"swizzle", a.swizzle},
                           {"custom", a.custom},
                           {"inner_shape", a.inner_shape},
                           {"cluster_shape", a.cluster_shape}}},
                         {"us", e.us},
                         {"heuristic_us", e.heuristic_us}});
    }
  }
  const Json j = {{"device", device}, {"cublaslt_version", cublaslt_version}, {"entries", entries}};
  return j.dump(1);
}

}  // namespace tandem
