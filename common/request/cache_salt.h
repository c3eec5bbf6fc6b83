// The effective cache salt of a request: what its KV block keys are rooted
// in (common/kv/block_hash.h), so that only requests of one salt share
// cached KV. A prefix hit shows in TTFT, so a tenant must never share keys
// with another (vLLM CVE-2025-46570): when the caller authenticated with an
// API token, the salt is derived from the token's identity as well as from
// the request's own cache_salt. The router derives it once per request and
// passes it to the workers, which use it as given; the router's prefix
// index keys prompts with the same value.
#pragma once

#include <string>
#include <string_view>

namespace tandem {

// `api_token`: the bearer token the call was authenticated with (empty:
// none). `request_salt`: GenerateRequest.cache_salt (validated). Without a
// token the request's salt is used as it is (empty: the shared cache); with
// one, the result is "tenant/" + 64 hex digits of a SHA-256 of the token
// (never the token itself: the salt travels to every worker) + "/" +
// the request's salt, so two tokens never give equal salts whatever salts
// their requests carry.
std::string EffectiveCacheSalt(std::string_view api_token, std::string_view request_salt);

// The token in an "authorization" header value "Bearer <token>"; empty when
// the value has another form.
std::string_view BearerToken(std::string_view authorization);

}  // namespace tandem
