// Element types of checkpoint tensors and KV caches, and conversion to fp32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace tandem {

enum class DType { kF32, kF16, kBF16 };

// Bytes per element.
inline size_t DTypeSize(DType t) { return t == DType::kF32 ? 4 : 2; }

// Safetensors spelling: "F32", "F16", "BF16".
std::string_view DTypeName(DType t);

inline float BF16ToFloat(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round-to-nearest-even, as torch does when it casts to bfloat16.
inline uint16_t FloatToBF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float F16ToFloat(uint16_t h);
uint16_t FloatToF16(float f);

// Converts `n` elements of type `t` at `src` to fp32 in `dst`.
void ConvertToFloat(DType t, const void* src, size_t n, float* dst);

}  // namespace tandem
