#include "bench/tandem_bench/metrics_scrape.h"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace tandem::bench {

absl::StatusOr<std::string> FetchMetrics(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError(absl::StrCat("'", address, "' is not host:port"));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(address.substr(0, colon).c_str(), address.substr(colon + 1).c_str(), &hints, &found) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve ", address));
  }
  int fd = socket(found->ai_family, SOCK_STREAM, 0);
  // A metrics endpoint that hangs must not hang the benchmark.
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  const bool connected = fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) == 0;
  freeaddrinfo(found);
  if (!connected) {
    if (fd >= 0) close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to ", address));
  }
  const std::string request = absl::StrCat("GET /metrics HTTP/1.0\r\nHost: ", address, "\r\n\r\n");
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot send to ", address));
  }
  std::string response;
  char chunk[16384];
  for (ssize_t n; (n = read(fd, chunk, sizeof chunk)) > 0;) response.append(chunk, static_cast<size_t>(n));
  close(fd);
  if (response.rfind("HTTP/1.1 200", 0) != 0 && response.rfind("HTTP/1.0 200", 0) != 0) {
    return absl::UnavailableError(absl::StrCat(address, "/metrics: ", response.substr(0, response.find('\r'))));
  }
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? std::string() : response.substr(body + 4);
}

double SumSamples(const std::string& exposition, const std::string& name) {
  double sum = 0;
  std::istringstream lines(exposition);
  for (std::string line; std::getline(lines, line);) {
    if (line.size() <= name.size() || line.compare(0, name.size(), name) != 0) continue;
    const char after = line[name.size()];
    if (after != '{' && after != ' ') continue;  // another metric sharing the prefix
    sum += std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr);
  }
  return sum;
}

absl::StatusOr<PrefixCounters> ScrapePrefixCounters(const std::vector<std::string>& endpoints) {
  PrefixCounters c;
  for (const std::string& e : endpoints) {
    absl::StatusOr<std::string> text = FetchMetrics(e);
    if (!text.ok()) return text.status();
    c.queried_tokens += SumSamples(*text, "tandem_prefix_cache_queried_tokens_total");
    c.hit_tokens += SumSamples(*text, "tandem_prefix_cache_hit_tokens_total");
    c.routed_tokens += SumSamples(*text, "tandem_router_routed_prompt_tokens_total");
    c.routed_hit_tokens += SumSamples(*text, "tandem_router_routed_prefix_hit_tokens_total");
  }
  return c;
}

}  // namespace tandem::bench
