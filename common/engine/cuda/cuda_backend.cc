#include "common/engine/cuda/cuda_backend.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/engine/cpu_kernels.h"
#include "common/engine/cuda/attention_kernels.h"
#include "common/engine/cuda/cuda_check.h"
#include "common/engine/cuda/cuda_kernels.h"
#include "common/engine/cuda/cuda_kv_pool.h"
#include "common/engine/cuda/cuda_weights.h"
#include "common/engine/cuda/device_buffer.h"
#include "common/engine/cuda/forward_plan.h"
#include "common/engine/cuda/kernel_profiler.h"
#include "common/engine/cuda/lt_gemm.h"
#include "common/engine/cuda/sample_rows.h"
#include "common/engine/cuda/sampling_kernels.h"
#include "common/engine/cuda/small_gemm.h"
#include "common/kv/kv_layout.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

// Device memory kept out of the KV pool for the eager path's scratch
// (activations of up to a few thousand prefill tokens) and cuBLAS.
constexpr double kScratchReserve = 3.0 * (1 << 30);
constexpr size_t kGemmWorkspace = 64 << 20;
// Batch sizes a decode step is captured at; a batch runs in the smallest
// that holds it, padded with rows that only touch the trash block.
constexpr int64_t kGraphBatches[] = {1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512};
constexpr int64_t kMaxGraphBatch = 512;

int64_t NextPow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

// Activations of one forward pass. The eager path grows its set as
// batches need; the graph set is sized once, before any capture, because
// captured graphs hold its addresses.
struct Scratch {
  DeviceBuffer meta, x, normed, qkv, attn, delta, gate_up, act, logits;
  DeviceBuffer partial_out, partial_max, partial_sum;
  DeviceBuffer arrivals;  // decode attention's per-(row, kv head) split counters: zero between launches

  absl::Status Reserve(const ModelConfig& c, int64_t rows, int64_t logit_rows, int64_t decode_rows, int64_t splits,
                       size_t meta_bytes) {
    const int64_t h = c.hidden_size, inter = c.intermediate_size, qs = c.q_size(), kvs = c.kv_size();
    TANDEM_RETURN_IF_ERROR(meta.Reserve(meta_bytes));
    TANDEM_RETURN_IF_ERROR(x.Reserve(rows * h * 2));
    TANDEM_RETURN_IF_ERROR(normed.Reserve(rows * h * 2));
    TANDEM_RETURN_IF_ERROR(qkv.Reserve(rows * (qs + 2 * kvs) * 4));
    TANDEM_RETURN_IF_ERROR(attn.Reserve(rows * qs * 2));
    TANDEM_RETURN_IF_ERROR(delta.Reserve(rows * h * 2));
    TANDEM_RETURN_IF_ERROR(gate_up.Reserve(rows * 2 * inter * 2));
    TANDEM_RETURN_IF_ERROR(act.Reserve(rows * inter * 2));
    TANDEM_RETURN_IF_ERROR(logits.Reserve(std::max<int64_t>(logit_rows, 1) * c.vocab_size * 4));
    const int64_t slots = std::max<int64_t>(decode_rows, 1) * c.num_attention_heads * std::max<int64_t>(splits, 1);
    TANDEM_RETURN_IF_ERROR(partial_out.Reserve(slots * c.head_dim * 4));
    TANDEM_RETURN_IF_ERROR(partial_max.Reserve(slots * 4));
    TANDEM_RETURN_IF_ERROR(partial_sum.Reserve(slots * 4));
    const void* old_arrivals = arrivals.get();
    TANDEM_RETURN_IF_ERROR(arrivals.Reserve(std::max<int64_t>(decode_rows, 1) * c.num_key_value_heads * 4));
    if (arrivals.get() != old_arrivals) {
      // A new allocation: nothing has used it yet, and every launch leaves
      // it zero. Synchronized, since the forward stream does not order
      // itself after the legacy stream's memset (a rare growth, not a step).
      TANDEM_CUDA_RETURN_IF_ERROR(cudaMemset(arrivals.get(), 0, arrivals.bytes()));
      TANDEM_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
    }
    return absl::OkStatus();
  }
  int64_t bytes() const {
    int64_t b = 0;
    for (const DeviceBuffer* d : {&meta, &x, &normed, &qkv, &attn, &delta, &gate_up, &act, &logits, &partial_out,
                                  &partial_max, &partial_sum, &arrivals}) {
      b += static_cast<int64_t>(d->bytes());
    }
    return b;
  }
};

static_assert(kPlanDecodeMaxPartition == cuda::kDecodeMaxPartition &&
              kPlanDecodeMinPartition == cuda::kDecodeMinPartition && kPlanPrefillTile == cuda::kPrefillTile);

class CudaGraphExec {
 public:
  CudaGraphExec() = default;
  explicit CudaGraphExec(cudaGraphExec_t e) : exec_(e) {}
  ~CudaGraphExec() {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
  }
  CudaGraphExec(CudaGraphExec&& o) noexcept : exec_(std::exchange(o.exec_, nullptr)) {}
  CudaGraphExec& operator=(CudaGraphExec&&) = delete;
  cudaGraphExec_t get() const { return exec_; }

 private:
  cudaGraphExec_t exec_ = nullptr;
};

class CudaBackend final : public ModelBackend {
 public:
  ~CudaBackend() override {
    graphs_.clear();
    for (cudaEvent_t e : layer_done_) cudaEventDestroy(e);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  absl::Status Init(const ModelConfig& config, const WeightStore& weights, const CudaBackendOptions& o);
  const ModelConfig& config() const override { return config_; }
  KvPoolView& kv_pool() override { return kv_; }
  bool samples_on_device() const override { return true; }
  std::string numerics() const override { return "cuda, bf16"; }
  absl::Status Forward(const ForwardBatch& batch, ForwardOutput* out) override;

 private:
  // y[rows][n] = x[rows][k] . w[n][k]^T, fp32 accumulation, y in `out_type`.
  absl::Status Gemm(const __nv_bfloat16* x, int64_t rows, int64_t k, const DeviceBuffer& w, int64_t n, void* y,
                    cudaDataType_t out_type) {
    if (rows <= cuda::kSmallGemmMaxRows && k % 8 == 0) {
      cuda::SmallGemm(x, rows, k, w.as<__nv_bfloat16>(), n, y, out_type == CUDA_R_16BF, stream_);
      return absl::OkStatus();
    }
    return gemm_.Run(x, rows, w.as<__nv_bfloat16>(), GemmShape{n, k, out_type == CUDA_R_32F}, y, stream_);
  }
  // Enqueues the whole forward pass of `plan` (its meta already in
  // s.meta) up to rounded logits in s.logits. No host synchronization
  // unless `on_layer_done` is set, so it can be captured in a graph.
  absl::Status EnqueueForward(const ForwardPlan& plan, Scratch& s, const DecodeSplit& split,
                              const std::function<void(int)>& on_layer_done);
  absl::Status Upload(const std::vector<int32_t>& meta, size_t count, DeviceBuffer& dst);
  // Waits for layer `l`'s kernels, then runs its hook.
  absl::Status LayerDone(int l, const std::function<void(int)>& on_layer_done) {
    TANDEM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(layer_done_[static_cast<size_t>(l)]));
    on_layer_done(l);
    return absl::OkStatus();
  }
  // Pure decode steps of up to kMaxGraphBatch sequences: padded to a
  // ladder size and replayed from a captured graph (or, with graphs off,
  // launched directly with the same shapes). `used` gets the scratch
  // holding the logits.
  absl::Status RunDecode(const ForwardBatch& batch, ForwardPlan* plan, Scratch** used);
  absl::Status Sample(const ForwardBatch& batch, const float* logits, ForwardOutput* out);
  // How the decode rows of a batch of `rows` rows split their contexts.
  DecodeSplit SplitFor(int64_t rows, int64_t longest) const {
    return DecodeSplitFor(rows, config_.num_key_value_heads, longest, num_sms_, kMaxGraphBatch * graph_max_splits_,
                          options_.decode_min_partition);
  }
  PlanLimits Limits() const {
    return {kv_.layout().block_size, kv_.num_blocks(), kv_.trash_block(), config_.vocab_size, options_.max_context};
  }

  ModelConfig config_;
  CudaBackendOptions options_;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer gemm_workspace_, inv_freq_;
  LtGemm gemm_;  // destroyed before its workspace
  CudaWeights w_;
  CudaKvPool kv_;
  Scratch eager_, graph_;
  int64_t graph_table_stride_ = 0, graph_max_splits_ = 0, num_sms_ = 0;
  std::map<std::tuple<int64_t, int64_t, int64_t>, CudaGraphExec> graphs_;  // (batch, partition, splits)
  PinnedBuffer pinned_meta_, pinned_sample_, pinned_results_;
  KernelProfiler profiler_;
  // One per layer, recorded after the layer's kernels when a pass has a
  // layer hook (EnqueueForward).
  std::vector<cudaEvent_t> layer_done_;
  DeviceBuffer sample_params_, sample_results_, sample_work_;
};

absl::Status CudaBackend::Init(const ModelConfig& config, const WeightStore& weights, const CudaBackendOptions& o) {
  config_ = config;
  options_ = o;
  const int32_t p = o.decode_min_partition;
  if (p < cuda::kDecodeMinPartition || p > cuda::kDecodeMaxPartition || (p & (p - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("decode_min_partition ", p, " is not a power of two in [",
                                                   cuda::kDecodeMinPartition, ", ", cuda::kDecodeMaxPartition, "]"));
  }
  TANDEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(o.device));
  int sms = 0;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, o.device));
  num_sms_ = sms;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  GemmAlgoTable gemm_algos;
  if (!o.gemm_algos.empty()) {
    TANDEM_ASSIGN_OR_RETURN(gemm_algos, LoadGemmAlgoTableForDevice(o.gemm_algos, o.device));
  }
  // A workspace of our own: cuBLASLt then never allocates during capture.
  TANDEM_RETURN_IF_ERROR(gemm_workspace_.Allocate(kGemmWorkspace));
  TANDEM_RETURN_IF_ERROR(gemm_.Init(gemm_workspace_.get(), kGemmWorkspace, std::move(gemm_algos)));
  TANDEM_RETURN_IF_ERROR(UploadWeights(config, weights, &w_));

  std::vector<float> inv;
  for (double f : RopeInverseFrequencies(config)) inv.push_back(static_cast<float>(f));
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    cudaEvent_t e = nullptr;
    TANDEM_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    layer_done_.push_back(e);
  }
  TANDEM_RETURN_IF_ERROR(inv_freq_.Allocate(inv.size() * sizeof(float)));
  TANDEM_CUDA_RETURN_IF_ERROR(
      cudaMemcpy(inv_freq_.get(), inv.data(), inv.size() * sizeof(float), cudaMemcpyHostToDevice));

  // Graph scratch before the pool, so the pool is sized from what is left.
  graph_table_stride_ = (o.max_context + o.block_size - 1) / o.block_size;
  graph_max_splits_ = NextPow2(cuda::DecodeSplits(o.max_context));
  if (o.cuda_graphs) {
    const size_t meta_bytes = static_cast<size_t>(8 * kMaxGraphBatch + kMaxGraphBatch * graph_table_stride_ + 64) * 4;
    TANDEM_RETURN_IF_ERROR(
        graph_.Reserve(config, kMaxGraphBatch, kMaxGraphBatch, kMaxGraphBatch, graph_max_splits_, meta_bytes));
  }

  const KvLayout layout = KvLayoutFor(config, o.block_size, DType::kBF16);
  size_t free_bytes = 0, total_bytes = 0;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
  int32_t blocks = o.num_kv_blocks;
  if (blocks <= 0) {
    // Our budget is a share of the whole device; what we hold already
    // counts against it, and we never take more than is free.
    const double mine = static_cast<double>(w_.bytes + graph_.bytes() + kGemmWorkspace);
    const double avail = std::min(static_cast<double>(total_bytes) * o.gpu_memory_fraction - mine,
                                  static_cast<double>(free_bytes)) -
                         kScratchReserve;
    blocks = static_cast<int32_t>(std::max(0.0, avail) / static_cast<double>(layout.block_bytes_all_layers())) - 1;
  }
  if (blocks <= 0) {
    return absl::ResourceExhaustedError(absl::StrCat("no device memory left for the KV cache: ", free_bytes >> 20,
                                                     " MiB free of ", total_bytes >> 20, " MiB, weights take ",
                                                     w_.bytes >> 20, " MiB"));
  }
  TANDEM_RETURN_IF_ERROR(kv_.Init(layout, blocks));
  TANDEM_CUDA_RETURN_IF_ERROR(cuda::ConfigurePrefillAttention());
  if (!cuda::DecodeAttentionSupported(config.head_dim, config.num_attention_heads / config.num_key_value_heads) ||
      !cuda::PrefillAttentionSupported(config.head_dim)) {
    TANDEM_CUDA_RETURN_IF_ERROR(
        cuda::ConfigureReferenceAttention(cuda::ReferenceAttentionSharedBytes(o.max_context, config.head_dim)));
  }
  TANDEM_LOG(INFO) << "CUDA memory plan (device " << o.device << ", " << (total_bytes >> 20) << " MiB, fraction "
                   << o.gpu_memory_fraction << "): weights " << (w_.bytes >> 20) << " MiB, graph scratch "
                   << (graph_.bytes() >> 20) << " MiB, KV pool " << blocks << " blocks of " << o.block_size
                   << " tokens = " << (kv_.bytes() >> 20) << " MiB ("
                   << static_cast<int64_t>(blocks) * o.block_size << " tokens), eager scratch reserve "
                   << static_cast<int64_t>(kScratchReserve) / (1 << 20) << " MiB";
  return absl::OkStatus();
}

absl::Status CudaBackend::Upload(const std::vector<int32_t>& meta, size_t count, DeviceBuffer& dst) {
  TANDEM_RETURN_IF_ERROR(pinned_meta_.Reserve(count * 4));
  std::memcpy(pinned_meta_.as<int32_t>(), meta.data(), count * 4);
  if (dst.bytes() < count * 4) return absl::InternalError("forward meta buffer too small");
  return CudaStatus(cudaMemcpyAsync(dst.get(), pinned_meta_.as<int32_t>(), count * 4, cudaMemcpyHostToDevice, stream_),
                    "upload forward meta");
}

absl::Status CudaBackend::EnqueueForward(const ForwardPlan& plan, Scratch& s, const DecodeSplit& split,
                                         const std::function<void(int)>& on_layer_done) {
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size, vocab = c.vocab_size;
  const int64_t qs = c.q_size(), kvs = c.kv_size(), qkv = qs + 2 * kvs, rows = plan.rows;
  const int32_t* d = s.meta.as<int32_t>();
  const float eps = static_cast<float>(c.rms_norm_eps);
  const int64_t group = c.num_attention_heads / c.num_key_value_heads;
  const bool fast_decode = cuda::DecodeAttentionSupported(c.head_dim, group);
  const bool fast_prefill = cuda::PrefillAttentionSupported(c.head_dim);
  auto* x = s.x.as<__nv_bfloat16>();
  auto* normed = s.normed.as<__nv_bfloat16>();
  auto* delta = s.delta.as<__nv_bfloat16>();

  profiler_.Mark(stream_, "embedding+norm");
  cuda::EmbeddingGather(d + plan.at.tokens, w_.embed.as<__nv_bfloat16>(), rows, hidden, x, stream_);
  cuda::RmsNorm(x, nullptr, w_.layers[0].attn_norm.as<__nv_bfloat16>(), rows, hidden, eps, normed, stream_);
  const int num_layers = static_cast<int>(w_.layers.size());
  for (int layer = 0; layer < num_layers; ++layer) {
    const CudaLayerWeights& lw = w_.layers[static_cast<size_t>(layer)];
    profiler_.Mark(stream_, "gemm qkv");
    TANDEM_RETURN_IF_ERROR(Gemm(normed, rows, hidden, lw.wqkv, qkv, s.qkv.get(), CUDA_R_32F));
    profiler_.Mark(stream_, "rope+kv write");
    const cuda::RopeCacheArgs rc{s.qkv.as<float>(), lw.bqkv.as<__nv_bfloat16>(), d + plan.at.positions,
                                 d + plan.at.slot_block, rows, c.num_attention_heads, c.num_key_value_heads,
                                 c.head_dim, kv_.layout().block_size, inv_freq_.as<float>(), kv_.Key(layer),
                                 kv_.Value(layer)};
    cuda::RopeAndWriteCache(rc, stream_);
    const cuda::KvCacheRef kv{kv_.Key(layer), kv_.Value(layer), c.num_attention_heads, c.num_key_value_heads,
                              c.head_dim, kv_.layout().block_size};
    auto* attn = s.attn.as<__nv_bfloat16>();
    profiler_.Mark(stream_, "attention decode");
    if (fast_decode && fast_prefill) {
      cuda::DecodeAttention(kv,
                            {s.qkv.as<float>(), qkv, d + plan.at.decode_rows, d + plan.at.decode_ctx,
                             d + plan.at.decode_tables, plan.decode_table_stride, plan.num_decode_rows,
                             static_cast<int32_t>(split.partition), split.splits,
                             s.partial_out.as<float>(), s.partial_max.as<float>(), s.partial_sum.as<float>(), attn,
                             s.arrivals.as<int32_t>()},
                            stream_);
      profiler_.Mark(stream_, "attention prefill");
      cuda::PrefillAttention(kv,
                             {s.qkv.as<float>(), qkv,
                              reinterpret_cast<const cuda::PrefillTile*>(d + plan.at.prefill_tiles), plan.num_tiles,
                              d + plan.at.prefill_tables, attn},
                             stream_);
    } else {
      cuda::ReferenceAttention(kv,
                               {s.qkv.as<float>(), qkv, d + plan.at.positions, d + plan.at.row_seq,
                                d + plan.at.flat_tables, d + plan.at.seq_table, rows, options_.max_context, attn},
                               stream_);
    }
    profiler_.Mark(stream_, "gemm o");
    TANDEM_RETURN_IF_ERROR(Gemm(attn, rows, qs, lw.wo, hidden, delta, CUDA_R_16BF));
    profiler_.Mark(stream_, "add+norm");
    cuda::AddRmsNorm(x, delta, lw.ffn_norm.as<__nv_bfloat16>(), rows, hidden, eps, normed, stream_);
    if (rows <= cuda::kSmallGemmMaxRows) {
      profiler_.Mark(stream_, "gemm gate_up+silu");
      cuda::SmallGemmSiluMul(normed, rows, hidden, lw.w_gate_up.as<__nv_bfloat16>(), inter,
                             s.act.as<__nv_bfloat16>(), stream_);
    } else {
      profiler_.Mark(stream_, "gemm gate_up");
      TANDEM_RETURN_IF_ERROR(Gemm(normed, rows, hidden, lw.w_gate_up, 2 * inter, s.gate_up.get(), CUDA_R_16BF));
      profiler_.Mark(stream_, "silu*up");
      cuda::SiluMul(s.gate_up.as<__nv_bfloat16>(), rows, inter, s.act.as<__nv_bfloat16>(), stream_);
    }
    profiler_.Mark(stream_, "gemm down");
    TANDEM_RETURN_IF_ERROR(Gemm(s.act.as<__nv_bfloat16>(), rows, inter, lw.w_down, hidden, delta, CUDA_R_16BF));
    profiler_.Mark(stream_, "add+norm");
    if (layer + 1 < num_layers) {
      cuda::AddRmsNorm(x, delta, w_.layers[static_cast<size_t>(layer) + 1].attn_norm.as<__nv_bfloat16>(), rows,
                       hidden, eps, normed, stream_);
    } else {
      cuda::AddInPlace(x, delta, rows * hidden, stream_);
    }
    // The layer's K/V must be in memory before a transport reads it, so
    // its hook waits for the layer's event; it runs one layer late, once
    // the next layer is enqueued, so that the GPU computes while the host
    // waits and sends (a stream synchronize per layer left the GPU idle
    // while each layer's kernels were enqueued).
    if (on_layer_done) {
      TANDEM_CUDA_RETURN_IF_ERROR(cudaEventRecord(layer_done_[static_cast<size_t>(layer)], stream_));
      if (layer > 0) TANDEM_RETURN_IF_ERROR(LayerDone(layer - 1, on_layer_done));
    }
  }
  if (on_layer_done && num_layers > 0) TANDEM_RETURN_IF_ERROR(LayerDone(num_layers - 1, on_layer_done));
  profiler_.Mark(stream_, "lm_head+norm");
  cuda::RmsNorm(x, d + plan.at.logit_rows, w_.final_norm.as<__nv_bfloat16>(), plan.num_logit_rows, hidden, eps,
                normed, stream_);
  TANDEM_RETURN_IF_ERROR(Gemm(normed, plan.num_logit_rows, hidden, w_.output(), vocab, s.logits.get(), CUDA_R_32F));
  // A bf16 model's lm_head returns bf16 logits.
  cuda::RoundToBf16(s.logits.as<float>(), plan.num_logit_rows * vocab, stream_);
  profiler_.Mark(stream_, "end");
  profiler_.EndPass(plan.pure_decode ? "decode" : "prefill/mixed");
  return CudaStatus(cudaGetLastError(), "forward kernels");
}

absl::Status CudaBackend::RunDecode(const ForwardBatch& batch, ForwardPlan* plan, Scratch** used) {
  const int64_t n = static_cast<int64_t>(batch.seqs.size());
  const int64_t bucket = *std::lower_bound(std::begin(kGraphBatches), std::end(kGraphBatches), n);
  TANDEM_ASSIGN_OR_RETURN(*plan, PlanForward(batch, Limits(), bucket, graph_table_stride_));
  // Padded to a power of two so that few graphs cover all contexts.
  DecodeSplit split = SplitFor(bucket, plan->longest_decode);
  split.splits = NextPow2(split.splits);
  if (bucket * split.splits > kMaxGraphBatch * graph_max_splits_) {
    return absl::InternalError("decode splits exceed the graph scratch");
  }
  if (!options_.cuda_graphs) {
    // The same padded shapes as a replay, launched kernel by kernel: the
    // two paths give identical results.
    *used = &eager_;
    TANDEM_RETURN_IF_ERROR(eager_.Reserve(config_, plan->rows, plan->num_logit_rows, plan->num_decode_rows,
                                          split.splits, plan->meta.size() * 4));
    TANDEM_RETURN_IF_ERROR(Upload(plan->meta, plan->meta.size(), eager_.meta));
    return EnqueueForward(*plan, eager_, split, nullptr);
  }
  *used = &graph_;
  // Only the arrays the graph reads; their offsets depend on `bucket` alone.
  TANDEM_RETURN_IF_ERROR(Upload(plan->meta, static_cast<size_t>(plan->at.row_seq), graph_.meta));
  const auto key = std::make_tuple(bucket, split.partition, split.splits);
  auto it = graphs_.find(key);
  if (it == graphs_.end()) {
    cudaGraph_t graph = nullptr;
    TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    profiler_.set_capturing(true);
    absl::Status st = EnqueueForward(*plan, graph_, split, nullptr);
    profiler_.set_capturing(false);
    const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
    TANDEM_RETURN_IF_ERROR(st);
    TANDEM_CUDA_RETURN_IF_ERROR(end);
    cudaGraphExec_t exec = nullptr;
    const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    TANDEM_CUDA_RETURN_IF_ERROR(inst);
    it = graphs_.emplace(key, CudaGraphExec(exec)).first;
    TANDEM_LOG(INFO) << "captured decode CUDA graph: batch " << bucket << ", " << split.splits << " context splits of "
                     << split.partition;
  }
  return CudaStatus(cudaGraphLaunch(it->second.get(), stream_), "cudaGraphLaunch");
}

absl::Status CudaBackend::Sample(const ForwardBatch& batch, const float* logits, ForwardOutput* out) {
  const size_t n = batch.sample.size();
  const cuda::SampleRowsInput in = cuda::BuildSampleRows(batch.sample, config_.vocab_size);
  const size_t param_bytes = n * sizeof(cuda::SampleRowParams);
  const size_t pen_bytes = in.penalties.size() * sizeof(cuda::PenaltyEntry);
  TANDEM_RETURN_IF_ERROR(pinned_sample_.Reserve(param_bytes + pen_bytes + 16));
  std::memcpy(pinned_sample_.as<char>(), in.params.data(), param_bytes);
  std::memcpy(pinned_sample_.as<char>() + param_bytes, in.penalties.data(), pen_bytes);
  TANDEM_RETURN_IF_ERROR(sample_params_.Reserve(param_bytes + pen_bytes + 16));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(sample_params_.get(), pinned_sample_.as<char>(), param_bytes + pen_bytes,
                                              cudaMemcpyHostToDevice, stream_));
  if (in.any_penalty) TANDEM_RETURN_IF_ERROR(sample_work_.Reserve(n * config_.vocab_size * 4));
  TANDEM_RETURN_IF_ERROR(sample_results_.Reserve(n * sizeof(cuda::SampleRowResult)));
  TANDEM_RETURN_IF_ERROR(pinned_results_.Reserve(n * sizeof(cuda::SampleRowResult)));
  cuda::SampleRows(logits, sample_work_.as<float>(), config_.vocab_size, sample_params_.as<cuda::SampleRowParams>(),
                   reinterpret_cast<const cuda::PenaltyEntry*>(sample_params_.as<char>() + param_bytes),
                   static_cast<int64_t>(n), sample_results_.as<cuda::SampleRowResult>(), stream_);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(pinned_results_.as<char>(), sample_results_.get(),
                                              n * sizeof(cuda::SampleRowResult), cudaMemcpyDeviceToHost, stream_));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  const auto* r = pinned_results_.as<cuda::SampleRowResult>();
  out->samples.resize(n);
  for (size_t i = 0; i < n; ++i) out->samples[i] = cuda::ToSampleResult(r[i], in.params[i]);
  return absl::OkStatus();
}

absl::Status CudaBackend::Forward(const ForwardBatch& batch, ForwardOutput* out) {
  TANDEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  if (!batch.sample.empty() && batch.sample.size() != batch.seqs.size()) {
    return absl::InvalidArgumentError("ForwardBatch.sample must be empty or one per sequence");
  }
  const int64_t group = config_.num_attention_heads / config_.num_key_value_heads;
  bool decode = !batch.on_layer_done && !batch.seqs.empty() &&
                static_cast<int64_t>(batch.seqs.size()) <= kMaxGraphBatch &&
                cuda::DecodeAttentionSupported(config_.head_dim, group) &&
                cuda::PrefillAttentionSupported(config_.head_dim);
  for (const SequenceChunk& c : batch.seqs) decode = decode && c.tokens.size() == 1 && !c.all_logits;

  ForwardPlan plan;
  Scratch* s = &eager_;
  if (decode) {
    TANDEM_RETURN_IF_ERROR(RunDecode(batch, &plan, &s));
  } else {
    TANDEM_ASSIGN_OR_RETURN(plan, PlanForward(batch, Limits()));
    const DecodeSplit split = SplitFor(plan.num_decode_rows, plan.longest_decode);
    TANDEM_RETURN_IF_ERROR(eager_.Reserve(config_, plan.rows, plan.num_logit_rows, plan.num_decode_rows, split.splits,
                                          plan.meta.size() * 4));
    TANDEM_RETURN_IF_ERROR(Upload(plan.meta, plan.meta.size(), eager_.meta));
    TANDEM_RETURN_IF_ERROR(EnqueueForward(plan, eager_, split, batch.on_layer_done));
  }
  out->row_offset = plan.row_offset;
  out->vocab_size = config_.vocab_size;
  out->logits.clear();
  out->samples.clear();
  if (!batch.sample.empty()) return Sample(batch, s->logits.as<float>(), out);
  // Padded decode rows come last; only the real ones are copied.
  const size_t real = static_cast<size_t>((decode ? static_cast<int64_t>(batch.seqs.size()) : plan.num_logit_rows) *
                                          config_.vocab_size);
  out->logits.resize(real);
  TANDEM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(out->logits.data(), s->logits.get(), real * 4, cudaMemcpyDeviceToHost, stream_));
  return CudaStatus(cudaStreamSynchronize(stream_), "forward");
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelBackend>> CreateCudaBackend(const ModelConfig& config, const WeightStore& weights,
                                                                const CudaBackendOptions& options) {
  if (config.head_dim % 2 != 0 || config.head_dim > 256) {
    return absl::InvalidArgumentError(absl::StrCat("head_dim ", config.head_dim, " is not supported (even, <= 256)"));
  }
  if (config.hidden_size % 8 != 0 || config.intermediate_size % 8 != 0 || !cuda::NormSupported(config.hidden_size)) {
    return absl::InvalidArgumentError(absl::StrCat("hidden_size ", config.hidden_size, " and intermediate_size ",
                                                   config.intermediate_size,
                                                   " must be multiples of 8 (hidden_size at most 16384)"));
  }
  if (options.max_context <= 0 || options.block_size <= 0) {
    return absl::InvalidArgumentError("max_context and block_size must be positive");
  }
  auto b = std::make_unique<CudaBackend>();
  TANDEM_RETURN_IF_ERROR(b->Init(config, weights, options));
  return std::unique_ptr<ModelBackend>(std::move(b));
}

}  // namespace tandem
