// Half-precision conversions against known bit patterns and against the
// definition of round-to-nearest-even.
#include "common/model/dtype.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace tandem {
namespace {

float FromBits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

TEST(DTypeTest, Names) {
  EXPECT_EQ(DTypeName(DType::kF32), "F32");
  EXPECT_EQ(DTypeName(DType::kF16), "F16");
  EXPECT_EQ(DTypeName(DType::kBF16), "BF16");
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
}

TEST(DTypeTest, F16KnownValues) {
  EXPECT_EQ(F16ToFloat(0x3C00), 1.0f);
  EXPECT_EQ(F16ToFloat(0xC000), -2.0f);
  EXPECT_EQ(F16ToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(F16ToFloat(0x7BFF), 65504.0f);                  // largest normal
  EXPECT_EQ(F16ToFloat(0x0400), std::ldexp(1.0f, -14));     // smallest normal
  EXPECT_EQ(F16ToFloat(0x0001), std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(F16ToFloat(0x8001), -std::ldexp(1.0f, -24));
  EXPECT_EQ(F16ToFloat(0x03FF), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(F16ToFloat(0x0200), std::ldexp(1.0f, -15));
  EXPECT_EQ(F16ToFloat(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(F16ToFloat(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(F16ToFloat(0x7E00)));
  EXPECT_TRUE(std::isnan(F16ToFloat(0x7C01)));
  EXPECT_TRUE(std::signbit(F16ToFloat(0x8000)));
  EXPECT_EQ(F16ToFloat(0x8000), 0.0f);

  EXPECT_EQ(FloatToF16(1.0f), 0x3C00);
  EXPECT_EQ(FloatToF16(0.1f), 0x2E66);
  EXPECT_EQ(FloatToF16(3.14159265f), 0x4248);
  EXPECT_EQ(FloatToF16(-2.0f), 0xC000);
  EXPECT_EQ(FloatToF16(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToF16(65519.0f), 0x7BFF);  // below the halfway point to 65536
  EXPECT_EQ(FloatToF16(65520.0f), 0x7C00);  // halfway: rounds to infinity
  EXPECT_EQ(FloatToF16(1e10f), 0x7C00);
  EXPECT_EQ(FloatToF16(-1e10f), 0xFC00);
  EXPECT_EQ(FloatToF16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(FloatToF16(-std::numeric_limits<float>::infinity()), 0xFC00);
  const uint16_t nan = FloatToF16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7C00, 0x7C00);
  EXPECT_NE(nan & 0x03FF, 0);
  // A NaN whose payload lives only in the low bits must stay a NaN.
  EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(FromBits(0x7F800001u)))));
  EXPECT_EQ(FloatToF16(0.0f), 0x0000);
  EXPECT_EQ(FloatToF16(-0.0f), 0x8000);
  // Ties to even: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
  EXPECT_EQ(FloatToF16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  EXPECT_EQ(FloatToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
}

TEST(DTypeTest, F16SubnormalRounding) {
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -25)), 0x0000);                  // tie: to even (0)
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -25) * 1.0001f), 0x0001);        // just above the tie
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -26)), 0x0000);
  EXPECT_EQ(FloatToF16(-std::ldexp(1.0f, -26)), 0x8000);
  EXPECT_EQ(FloatToF16(std::ldexp(1.5f, -24)), 0x0002);                  // tie 1|2 -> 2
  EXPECT_EQ(FloatToF16(std::ldexp(2.5f, -24)), 0x0002);                  // tie 2|3 -> 2
  EXPECT_EQ(FloatToF16(std::ldexp(1023.0f, -24)), 0x03FF);
  EXPECT_EQ(FloatToF16(std::ldexp(1023.5f, -24)), 0x0400);               // carries into the normals
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -14)), 0x0400);
  EXPECT_EQ(FloatToF16(std::numeric_limits<float>::denorm_min()), 0x0000);
}

TEST(DTypeTest, F16RoundTripsEveryFiniteValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7C00) == 0x7C00) continue;  // inf/nan
    ASSERT_EQ(FloatToF16(F16ToFloat(static_cast<uint16_t>(h))), h) << std::hex << h;
  }
}

// For many floats in the half range, the chosen half is the nearest one,
// and on a tie the even one: the definition, checked without a reference
// implementation.
TEST(DTypeTest, F16PicksTheNearestHalfTiesToEven) {
  uint64_t state = 12345;
  for (int i = 0; i < 200000; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    // Exponents from tiny subnormals to just under 65504, random mantissas.
    const uint32_t exp = 100 + static_cast<uint32_t>((state >> 33) % 42);  // 2^-27 .. 2^14
    const uint32_t bits = ((state >> 63) << 31) | (exp << 23) | static_cast<uint32_t>(state & 0x7fffff);
    const float f = FromBits(bits);
    const uint16_t h = FloatToF16(f);
    const double got = F16ToFloat(h);
    const double err = std::fabs(got - f);
    for (int delta : {-1, 1}) {
      const uint16_t mag = h & 0x7fff;
      if ((delta < 0 && mag == 0) || (delta > 0 && mag >= 0x7BFF)) continue;
      const uint16_t other = static_cast<uint16_t>((h & 0x8000) | (mag + delta));
      const double other_err = std::fabs(static_cast<double>(F16ToFloat(other)) - f);
      ASSERT_LE(err, other_err) << f << " -> " << std::hex << h;
      if (err == other_err) {
        ASSERT_EQ(h & 1, 0) << "tie not to even: " << f;
      }
    }
  }
}

TEST(DTypeTest, BF16KnownValuesAndRounding) {
  EXPECT_EQ(FloatToBF16(1.0f), 0x3F80);
  EXPECT_EQ(BF16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(FloatToBF16(3.14159265f), 0x4049);
  EXPECT_EQ(BF16ToFloat(0x4049), 3.140625f);
  EXPECT_EQ(FloatToBF16(-2.0f), 0xC000);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1).
  EXPECT_EQ(FloatToBF16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
  EXPECT_EQ(FloatToBF16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::max()), 0x7F80);  // rounds up to infinity
  EXPECT_EQ(FloatToBF16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(FromBits(0x7F800001u)))));
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7F80) == 0x7F80 && (h & 0x7F) != 0) continue;  // nan
    ASSERT_EQ(FloatToBF16(BF16ToFloat(static_cast<uint16_t>(h))), h) << std::hex << h;
  }
}

TEST(DTypeTest, ConvertToFloatReadsUnalignedBuffers) {
  const std::vector<float> want = {1.0f, -2.5f, 0.125f, 65504.0f};
  std::vector<unsigned char> buf(1 + want.size() * 4);
  std::vector<float> out(want.size());

  std::memcpy(buf.data() + 1, want.data(), want.size() * 4);
  ConvertToFloat(DType::kF32, buf.data() + 1, want.size(), out.data());
  EXPECT_EQ(out, want);

  for (DType t : {DType::kF16, DType::kBF16}) {
    for (size_t i = 0; i < want.size(); ++i) {
      const uint16_t h = t == DType::kF16 ? FloatToF16(want[i]) : FloatToBF16(want[i]);
      std::memcpy(buf.data() + 1 + 2 * i, &h, 2);
    }
    ConvertToFloat(t, buf.data() + 1, want.size(), out.data());
    if (t == DType::kF16) {
      EXPECT_EQ(out, want);  // all exactly representable in half
    } else {
      EXPECT_EQ(out, (std::vector<float>{1.0f, -2.5f, 0.125f, 65536.0f}));  // 65504 rounds in bf16
    }
  }
}

}  // namespace
}  // namespace tandem
