// The effective cache salt keeps tenants apart and never carries the token.
#include "common/request/cache_salt.h"

#include "common/request/request_validation.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

TEST(CacheSaltTest, WithoutATokenTheRequestsSaltIsUsedAsItIs) {
  EXPECT_EQ(EffectiveCacheSalt("", ""), "");
  EXPECT_EQ(EffectiveCacheSalt("", "conversation-7"), "conversation-7");
}

TEST(CacheSaltTest, TwoTokensNeverShareASaltWhateverTheRequestsSend) {
  const std::string a = EffectiveCacheSalt("token-a", "");
  const std::string b = EffectiveCacheSalt("token-b", "");
  EXPECT_NE(a, b);
  EXPECT_NE(a, "");
  EXPECT_EQ(a, EffectiveCacheSalt("token-a", ""));  // stable: same tenant, same keys
  EXPECT_NE(EffectiveCacheSalt("token-a", "x"), a);
  // A tenant cannot reach another's keys through its own salt.
  EXPECT_NE(EffectiveCacheSalt("token-b", a), a);
  EXPECT_EQ(a.find("token-a"), std::string::npos);  // the token itself never travels
  EXPECT_LE(EffectiveCacheSalt("t", std::string(kMaxCacheSaltBytes, 's')).size(), kMaxEffectiveCacheSaltBytes);
}

TEST(CacheSaltTest, BearerTokenOnlyFromTheBearerForm) {
  EXPECT_EQ(BearerToken("Bearer abc"), "abc");
  EXPECT_EQ(BearerToken("Basic abc"), "");
  EXPECT_EQ(BearerToken(""), "");
}

TEST(CacheSaltTest, ValidationBoundsTheBytes) {
  EXPECT_TRUE(ValidateCacheSalt(std::string(kMaxCacheSaltBytes, 'x')).ok());
  const absl::Status s = ValidateCacheSalt(std::string(kMaxCacheSaltBytes + 1, 'x'));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("cache_salt"), std::string::npos);
  EXPECT_TRUE(ValidateCacheSalt(std::string(400, 'x'), kMaxEffectiveCacheSaltBytes).ok());
}

}  // namespace
}  // namespace tandem
