#include "common/kv/kv_layout.h"

#include "absl/strings/str_cat.h"

namespace tandem {

std::string KvLayout::DebugString() const {
  return absl::StrCat("layers=", num_layers, " kv_heads=", num_kv_heads, " head_dim=", head_dim,
                      " block_size=", block_size, " dtype=", std::string(DTypeName(dtype)));
}

KvLayout KvLayoutFor(const ModelConfig& config, int32_t block_size, DType dtype) {
  KvLayout l;
  l.num_layers = static_cast<int32_t>(config.num_hidden_layers);
  l.num_kv_heads = static_cast<int32_t>(config.num_key_value_heads);
  l.head_dim = static_cast<int32_t>(config.head_dim);
  l.block_size = block_size;
  l.dtype = dtype;
  return l;
}

}  // namespace tandem
