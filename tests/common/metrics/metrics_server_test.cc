// The /metrics endpoint: Prometheus text with the constant labels on GET
// /metrics, 404 elsewhere, a free port for port 0.
#include "common/metrics/metrics_server.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "common/metrics/serving_metrics.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

std::string Get(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n";
  EXPECT_EQ(write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

TEST(MetricsServerTest, ServesTheRegistryWithConstantLabels) {
  auto server = MetricsServer::Start("127.0.0.1:0", {{"model", "m"}, {"role", "decode"}});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  DecodeMetrics metrics(**server);
  metrics.preemptions->Increment(3);
  metrics.batch_size_per_iteration->Observe(5);
  const std::string page = Get((*server)->port(), "/metrics");
  EXPECT_EQ(page.compare(0, 15, "HTTP/1.1 200 OK"), 0) << page;
  EXPECT_NE(page.find("tandem_preemptions_total{model=\"m\",role=\"decode\"} 3"), std::string::npos) << page;
  EXPECT_NE(page.find("tandem_decode_batch_size_per_iteration_bucket{model=\"m\",role=\"decode\",le=\"8\"} 1"),
            std::string::npos)
      << page;
  EXPECT_EQ(Get((*server)->port(), "/other").compare(0, 12, "HTTP/1.1 404"), 0);
}

TEST(MetricsServerTest, ABusyPortIsAClearError) {
  auto first = MetricsServer::Start("127.0.0.1:0", {});
  ASSERT_TRUE(first.ok());
  auto second = MetricsServer::Start("127.0.0.1:" + std::to_string((*first)->port()), {});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find("cannot serve metrics"), std::string::npos);
}

}  // namespace
}  // namespace tandem
