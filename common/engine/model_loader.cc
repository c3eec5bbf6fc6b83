#include "common/engine/model_loader.h"

#include <algorithm>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/default_model/default_model.h"
#include "common/engine/cpu_backend.h"
#ifdef TANDEM_HAVE_CUDA
#include "common/engine/cuda/cuda_backend.h"
#endif
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {

absl::StatusOr<LoadedModel> LoadModel(const ModelSource& source) {
  LoadedModel m;
  if (source.model_dir.empty()) {
    TANDEM_ASSIGN_OR_RETURN(m.dir, EnsureDefaultModel());
    m.name = "tandem-default";
  } else {
    m.dir = source.model_dir;
    m.name = std::filesystem::path(source.model_dir).lexically_normal().filename().string();
    if (m.name.empty()) m.name = std::filesystem::path(source.model_dir).parent_path().filename();
  }
  if (!std::filesystem::is_directory(m.dir)) {
    return absl::NotFoundError(absl::StrCat("model directory ", m.dir, " does not exist"));
  }
  TANDEM_LOG(INFO) << "loading model " << m.name << " from " << m.dir
                   << (source.dummy_weights ? " (dummy weights)" : "");
  TANDEM_ASSIGN_OR_RETURN(m.config, LoadModelConfig(m.dir + "/config.json"));
  TANDEM_ASSIGN_OR_RETURN(m.generation, LoadGenerationConfig(m.dir));
  const std::vector<int32_t> eos = MergeEosIds(m.config.eos_token_ids, m.generation);
  m.config.eos_token_ids.assign(eos.begin(), eos.end());
  TANDEM_ASSIGN_OR_RETURN(m.tokenizer, Tokenizer::FromDir(m.dir));
  if (source.dummy_weights) {
    m.weights = MakeDummyWeightStore(m.config, source.dummy_seed, m.config.torch_dtype);
    m.dummy_seed = source.dummy_seed;
  } else {
    TANDEM_ASSIGN_OR_RETURN(m.weights, OpenSafetensorsDir(m.dir));
    TANDEM_RETURN_IF_ERROR(ValidateWeights(*m.weights, m.config));
  }
  TANDEM_LOG(INFO) << m.config.architecture << ": " << m.config.num_hidden_layers << " layers, hidden "
                   << m.config.hidden_size << ", " << m.config.num_attention_heads << "/"
                   << m.config.num_key_value_heads << " heads, vocab " << m.config.vocab_size
                   << ", " << m.config.NumParameters() << " parameters";
  return m;
}

absl::StatusOr<std::optional<bool>> ParseBf16ActivationsFlag(std::string_view value) {
  if (value == "auto" || value.empty()) return std::optional<bool>();
  if (value == "on" || value == "true") return std::optional<bool>(true);
  if (value == "off" || value == "false") return std::optional<bool>(false);
  return absl::InvalidArgumentError(
      absl::StrCat("--cpu_bf16_activations '", std::string(value), "' is not auto, on or off"));
}

std::string ModelFingerprint(const LoadedModel& model) {
  // FNV-1a over a canonical description; collisions only matter between
  // deployments that would otherwise mix models by mistake.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
    h ^= 0xff;
    h *= 1099511628211ull;
  };
  mix(ModelConfigToJson(model.config));
  for (const TensorSpec& t : ExpectedTensors(model.config)) {
    mix(t.name);
    // Dummy tensors are generated on first Get(); their shapes are the spec's.
    if (model.dummy_seed) continue;
    absl::StatusOr<HostTensor> tensor = model.weights->Get(t.name);
    if (tensor.ok()) {
      mix(std::string(DTypeName(tensor->dtype)));
      for (int64_t d : tensor->shape) mix(std::to_string(d));
    }
  }
  if (model.dummy_seed) mix(absl::StrCat("dummy-seed:", *model.dummy_seed));
  return absl::StrCat(model.name, "-", absl::Hex(h, absl::kZeroPad16));
}

absl::StatusOr<std::unique_ptr<ModelBackend>> CreateBackend(const LoadedModel& model,
                                                            const BackendOptions& options) {
  switch (options.device) {
    case BackendOptions::Device::kCpu: {
      CpuBackendOptions cpu;
      cpu.block_size = options.block_size;
      cpu.num_kv_blocks = options.num_kv_blocks;
      cpu.bf16_activations = options.cpu_bf16_activations;
      cpu.num_threads = options.num_threads > 0
                            ? options.num_threads
                            : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
      TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<CpuBackend> backend,
                              CpuBackend::Create(model.config, *model.weights, cpu));
      TANDEM_LOG(INFO) << "CPU backend: " << cpu.num_threads << " threads, KV pool "
                       << cpu.num_kv_blocks << " blocks of " << cpu.block_size << " tokens ("
                       << backend->kv_pool().layout().block_bytes_all_layers() * cpu.num_kv_blocks /
                              (1 << 20)
                       << " MiB), " << (backend->bf16_activations() ? "bf16" : "fp32") << " activations";
      return std::unique_ptr<ModelBackend>(std::move(backend));
    }
    case BackendOptions::Device::kCuda: {
#ifdef TANDEM_HAVE_CUDA
      CudaBackendOptions cuda;
      cuda.block_size = options.block_size;
      cuda.num_kv_blocks = options.num_kv_blocks;
      cuda.device = options.gpu;
      cuda.gpu_memory_fraction = options.gpu_memory_fraction;
      // Scratch and graph tables scale with it: capped at 32k positions.
      cuda.max_context = model.config.max_position_embeddings > 0
                             ? std::min<int64_t>(model.config.max_position_embeddings, 32768)
                             : 8192;
      cuda.cuda_graphs = options.cuda_graphs;
      if (options.cuda_decode_min_partition > 0) cuda.decode_min_partition = options.cuda_decode_min_partition;
      cuda.gemm_algos = options.cuda_gemm_algos;
      return CreateCudaBackend(model.config, *model.weights, cuda);
#else
      return absl::UnimplementedError("this build has no CUDA backend (configure with -DTANDEM_CUDA=ON)");
#endif
    }
  }
  return absl::InvalidArgumentError("unknown device");
}

}  // namespace tandem
