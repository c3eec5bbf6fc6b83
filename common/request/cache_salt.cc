#include "common/request/cache_salt.h"

#include <openssl/sha.h>

#include "absl/strings/str_format.h"

namespace tandem {

std::string EffectiveCacheSalt(std::string_view api_token, std::string_view request_salt) {
  if (api_token.empty()) return std::string(request_salt);
  // A domain tag, so this digest is of no use for anything else.
  std::string input = "tandem/cache-salt-tenant/v1:";
  input.append(api_token.data(), api_token.size());
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(input.data()), input.size(), md);
  std::string out = "tenant/";
  for (unsigned char b : md) absl::StrAppendFormat(&out, "%02x", b);
  out += '/';
  out.append(request_salt.data(), request_salt.size());
  return out;
}

std::string_view BearerToken(std::string_view authorization) {
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.substr(0, kBearer.size()) != kBearer) return {};
  return authorization.substr(kBearer.size());
}

}  // namespace tandem
