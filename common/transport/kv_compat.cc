// The handshake checks of kv_transport.h.
#include "absl/strings/str_cat.h"
#include "common/transport/kv_transport.h"
#include "common/transport/transfer_checks.h"

namespace tandem {
namespace {

std::string DTypeSpelling(DType t) {
  switch (t) {
    case DType::kF32: return "float32";
    case DType::kF16: return "float16";
    case DType::kBF16: return "bfloat16";
  }
  return "?";
}

}  // namespace

v1::KvLayoutSpec ToProto(const KvLayout& layout) {
  v1::KvLayoutSpec s;
  s.set_num_layers(layout.num_layers);
  s.set_num_kv_heads(layout.num_kv_heads);
  s.set_head_dim(layout.head_dim);
  s.set_block_size(layout.block_size);
  s.set_dtype(DTypeSpelling(layout.dtype));
  return s;
}

absl::Status CheckKvCompatible(const KvEndpointInfo& self, const KvLayout& local,
                               const v1::KvPoolDescriptor& remote) {
  if (remote.model_fingerprint() != self.model_fingerprint) {
    return absl::FailedPreconditionError(absl::StrCat("model mismatch with decode worker ", remote.worker_id(),
                                                      ": model_fingerprint is ", self.model_fingerprint,
                                                      " here but ", remote.model_fingerprint(), " there"));
  }
  if (!self.numerics.empty() && !remote.engine_numerics().empty() && self.numerics != remote.engine_numerics()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "engine numerics mismatch with decode worker ", remote.worker_id(), ": \"", self.numerics, "\" here but \"",
        remote.engine_numerics(), "\" there (start both workers with the same --device and --cpu_bf16_activations)"));
  }
  const v1::KvLayoutSpec mine = ToProto(local);
  const v1::KvLayoutSpec& theirs = remote.layout();
  // The message is built only on a mismatch: this runs once per transfer.
  auto differs = [&](const char* field, auto here, auto there) {
    return absl::FailedPreconditionError(absl::StrCat("KV layout mismatch with decode worker ", remote.worker_id(),
                                                      ": ", field, " is ", here, " here but ", there, " there"));
  };
  if (mine.num_layers() != theirs.num_layers()) return differs("num_layers", mine.num_layers(), theirs.num_layers());
  if (mine.num_kv_heads() != theirs.num_kv_heads()) {
    return differs("num_kv_heads", mine.num_kv_heads(), theirs.num_kv_heads());
  }
  if (mine.head_dim() != theirs.head_dim()) return differs("head_dim", mine.head_dim(), theirs.head_dim());
  if (mine.block_size() != theirs.block_size()) return differs("block_size", mine.block_size(), theirs.block_size());
  if (mine.dtype() != theirs.dtype()) return differs("dtype", mine.dtype(), theirs.dtype());
  if (remote.key_base_size() != theirs.num_layers() || remote.value_base_size() != theirs.num_layers()) {
    return absl::InvalidArgumentError(absl::StrCat("pool descriptor of ", remote.worker_id(), " has ",
                                                   remote.key_base_size(), " key and ", remote.value_base_size(),
                                                   " value bases for ", theirs.num_layers(), " layers"));
  }
  if (remote.block_stride() != static_cast<uint64_t>(local.block_bytes())) {
    return absl::InvalidArgumentError(absl::StrCat("pool descriptor of ", remote.worker_id(), ": block_stride ",
                                                   remote.block_stride(), " is not the layout's ",
                                                   local.block_bytes(), " bytes per block"));
  }
  return absl::OkStatus();
}

absl::Status CheckBlocksInRange(const v1::KvPoolDescriptor& remote, const std::vector<int32_t>& dst_blocks) {
  return CheckDestinationBlocks(remote, dst_blocks);
}

absl::Status CheckTransfer(const KvEndpointInfo& self, KvPoolView& pool, const v1::KvPoolDescriptor& dest,
                           const KvTransferSpec& spec) {
  if (absl::Status s = CheckKvCompatible(self, pool.layout(), dest); !s.ok()) return s;
  if (absl::Status s = CheckBlocksInRange(dest, spec.dst_blocks); !s.ok()) return s;
  return CheckSourceBlocks(spec, pool.num_blocks());
}

v1::KvPoolDescriptor DescribePool(KvPoolView& pool, const KvEndpointInfo& self, std::string_view transport) {
  const KvLayout& layout = pool.layout();
  v1::KvPoolDescriptor d;
  d.set_worker_id(self.worker_id);
  d.set_model_fingerprint(self.model_fingerprint);
  d.set_engine_numerics(self.numerics);
  *d.mutable_layout() = ToProto(layout);
  d.set_num_blocks(pool.num_blocks());
  d.set_transport(std::string(transport));
  for (int l = 0; l < layout.num_layers; ++l) {
    d.add_key_base(reinterpret_cast<uint64_t>(pool.KeyBlock(l, 0)));
    d.add_value_base(reinterpret_cast<uint64_t>(pool.ValueBlock(l, 0)));
  }
  d.set_block_stride(static_cast<uint64_t>(layout.block_bytes()));
  return d;
}

}  // namespace tandem
