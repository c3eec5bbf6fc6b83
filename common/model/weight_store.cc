#include "common/model/weight_store.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/model/safetensors_reader.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Tensors of several memory-mapped files, by name.
class SafetensorsStore final : public WeightStore {
 public:
  explicit SafetensorsStore(std::map<std::string, HostTensor> tensors) : tensors_(std::move(tensors)) {}
  absl::StatusOr<HostTensor> Get(std::string_view name) const override {
    auto it = tensors_.find(std::string(name));
    if (it == tensors_.end()) {
      return absl::NotFoundError(absl::StrCat("tensor '", std::string(name), "' is not in the checkpoint"));
    }
    return it->second;
  }
  std::vector<std::string> Names() const override {
    std::vector<std::string> names;
    for (const auto& [n, t] : tensors_) names.push_back(n);
    return names;
  }

 private:
  std::map<std::string, HostTensor> tensors_;
};

// splitmix64: a counter-based generator, so every tensor's values are a
// pure function of (seed, name, index) on every platform.
uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t HashName(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

class DummyStore final : public WeightStore {
 public:
  DummyStore(const ModelConfig& config, uint64_t seed, DType dtype, float scale)
      : seed_(seed), dtype_(dtype), scale_(scale) {
    for (TensorSpec& s : ExpectedTensors(config)) specs_.emplace(s.name, std::move(s.shape));
  }

  absl::StatusOr<HostTensor> Get(std::string_view name) const override {
    auto spec = specs_.find(std::string(name));
    if (spec == specs_.end()) {
      return absl::NotFoundError(absl::StrCat("tensor '", std::string(name), "' is not part of this model"));
    }
    // Generation runs under the lock: concurrent first Gets of one tensor
    // must not fill two buffers, and backends load tensors once at startup.
    absl::MutexLock lock(&mu_);
    auto cached = cache_.find(spec->first);
    if (cached != cache_.end()) return cached->second;
    HostTensor t = Generate(spec->first, spec->second);
    cache_.emplace(spec->first, t);
    return t;
  }

  std::vector<std::string> Names() const override {
    std::vector<std::string> names;
    for (const auto& [n, s] : specs_) names.push_back(n);
    return names;
  }

 private:
  HostTensor Generate(const std::string& name, const std::vector<int64_t>& shape) const {
    HostTensor t;
    t.name = name;
    t.dtype = dtype_;
    t.shape = shape;
    t.source = "dummy weights";
    const int64_t n = t.numel();
    auto buf = std::make_shared<std::vector<std::byte>>(static_cast<size_t>(n) * DTypeSize(dtype_));
    const bool is_norm = name.find("norm") != std::string::npos;
    const uint64_t key = SplitMix64(seed_ ^ HashName(name));
    const size_t esize = DTypeSize(dtype_);
    auto fill = [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        // 24 random bits -> uniform in [-1, 1).
        const double u = static_cast<double>(SplitMix64(key + static_cast<uint64_t>(i)) >> 40) / (1 << 23) - 1.0;
        const float v = is_norm ? 1.0f + 0.25f * scale_ * static_cast<float>(u) : scale_ * static_cast<float>(u);
        std::byte* dst = buf->data() + i * esize;
        if (dtype_ == DType::kF32) {
          std::memcpy(dst, &v, 4);
        } else {
          const uint16_t h = dtype_ == DType::kBF16 ? FloatToBF16(v) : FloatToF16(v);
          std::memcpy(dst, &h, 2);
        }
      }
    };
    // Each value is a pure function of its index, so big tensors (an 8B
    // model's embedding is half a billion values) are filled by all cores.
    const int64_t threads = n < (1 << 20) ? 1 : std::max<int64_t>(1, std::thread::hardware_concurrency());
    std::vector<std::thread> workers;
    for (int64_t k = 1; k < threads; ++k) workers.emplace_back(fill, n * k / threads, n * (k + 1) / threads);
    fill(0, n / threads);
    for (std::thread& w : workers) w.join();
    t.data = buf->data();
    t.nbytes = buf->size();
    t.keepalive = buf;
    return t;
  }

  const uint64_t seed_;
  const DType dtype_;
  const float scale_;
  std::map<std::string, std::vector<int64_t>> specs_;
  mutable absl::Mutex mu_;
  mutable std::map<std::string, HostTensor> cache_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

int64_t HostTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void HostTensor::ToFloat(float* out) const { ConvertToFloat(dtype, data, static_cast<size_t>(numel()), out); }

std::vector<float> HostTensor::ToFloat() const {
  std::vector<float> out(static_cast<size_t>(numel()));
  ToFloat(out.data());
  return out;
}

std::vector<TensorSpec> ExpectedTensors(const ModelConfig& c) {
  const int64_t h = c.hidden_size, q = c.q_size(), kv = c.kv_size(), inter = c.intermediate_size;
  std::vector<TensorSpec> specs = {{"model.embed_tokens.weight", {c.vocab_size, h}}};
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    specs.push_back({p + "input_layernorm.weight", {h}});
    specs.push_back({p + "self_attn.q_proj.weight", {q, h}});
    specs.push_back({p + "self_attn.k_proj.weight", {kv, h}});
    specs.push_back({p + "self_attn.v_proj.weight", {kv, h}});
    if (c.attention_bias) {
      specs.push_back({p + "self_attn.q_proj.bias", {q}});
      specs.push_back({p + "self_attn.k_proj.bias", {kv}});
      specs.push_back({p + "self_attn.v_proj.bias", {kv}});
    }
    specs.push_back({p + "self_attn.o_proj.weight", {h, q}});
    specs.push_back({p + "post_attention_layernorm.weight", {h}});
    specs.push_back({p + "mlp.gate_proj.weight", {inter, h}});
    specs.push_back({p + "mlp.up_proj.weight", {inter, h}});
    specs.push_back({p + "mlp.down_proj.weight", {h, inter}});
  }
  specs.push_back({"model.norm.weight", {h}});
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {c.vocab_size, h}});
  return specs;
}

absl::StatusOr<HostTensor> GetTensorChecked(const WeightStore& store, std::string_view name,
                                            const std::vector<int64_t>& shape) {
  TANDEM_ASSIGN_OR_RETURN(HostTensor t, store.Get(name));
  if (t.shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", std::string(name), "' in ", t.source,
                                                   " has shape ", ShapeString(t.shape),
                                                   " but the config needs ", ShapeString(shape)));
  }
  return t;
}

absl::Status ValidateWeights(const WeightStore& store, const ModelConfig& config) {
  for (const TensorSpec& s : ExpectedTensors(config)) {
    TANDEM_RETURN_IF_ERROR(GetTensorChecked(store, s.name, s.shape).status());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<WeightStore>> OpenSafetensorsDir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": not a directory"));
  }
  std::vector<std::string> files;
  // weight_map of the index: tensor name -> file path, checked against what
  // the files actually hold once they are read.
  std::map<std::string, std::string> index_map;
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  const bool has_index = fs::exists(index, ec);
  if (has_index) {
    std::ifstream in(index);
    std::stringstream ss;
    ss << in.rdbuf();
    nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
    if (!in || j.is_discarded() || !j.is_object()) {
      return absl::DataLossError(absl::StrCat(index.string(), ": not a valid JSON object"));
    }
    auto wm = j.find("weight_map");
    if (wm == j.end() || !wm->is_object()) {
      return absl::DataLossError(absl::StrCat(index.string(), ": weight_map is missing or not an object"));
    }
    for (auto& [name, file] : wm->items()) {
      if (!file.is_string() || file.get<std::string>().empty()) {
        return absl::DataLossError(
            absl::StrCat(index.string(), ": weight_map['", name, "'] is not a file name"));
      }
      const std::string path = (fs::path(dir) / file.get<std::string>()).string();
      files.push_back(path);
      index_map.emplace(name, path);
    }
  } else {
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (e.path().extension() == ".safetensors" && e.is_regular_file()) files.push_back(e.path().string());
    }
    if (ec) return absl::NotFoundError(absl::StrCat(dir, ": ", ec.message()));
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  if (files.empty()) {
    return absl::NotFoundError(absl::StrCat(dir, ": no *.safetensors file (and no model.safetensors.index.json)"));
  }
  std::map<std::string, HostTensor> all;
  for (const std::string& f : files) {
    TANDEM_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(f));
    for (auto& [name, t] : file.tensors) {
      auto [it, inserted] = all.emplace(name, t);
      if (!inserted) {
        return absl::DataLossError(absl::StrCat("tensor '", name, "' is in both ", it->second.source,
                                                " and ", f));
      }
    }
  }
  // A stale index (a shard re-exported without updating it) would make
  // tensors silently come from the wrong file or go missing.
  for (const auto& [name, path] : index_map) {
    auto it = all.find(name);
    if (it == all.end()) {
      return absl::DataLossError(absl::StrCat(index.string(), ": tensor '", name, "' is mapped to ", path,
                                              " but that file does not hold it"));
    }
    if (it->second.source != path) {
      return absl::DataLossError(absl::StrCat(index.string(), ": tensor '", name, "' is mapped to ", path,
                                              " but is in ", it->second.source));
    }
  }
  return std::unique_ptr<WeightStore>(new SafetensorsStore(std::move(all)));
}

std::unique_ptr<WeightStore> MakeDummyWeightStore(const ModelConfig& config, uint64_t seed, DType dtype,
                                                  float scale) {
  return std::make_unique<DummyStore>(config, seed, dtype, scale);
}

}  // namespace tandem
