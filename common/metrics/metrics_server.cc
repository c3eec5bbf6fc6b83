#include "common/metrics/metrics_server.h"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <initializer_list>

#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"

namespace tandem {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& address,
                                                                    std::map<std::string, std::string> const_labels) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError(absl::StrCat("metrics address '", address, "' is not host:port"));
  std::string host = address.substr(0, colon);
  if (host.empty() || host == "0.0.0.0" || host == "*") host = "0.0.0.0";
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  if (getaddrinfo(host.c_str(), address.substr(colon + 1).c_str(), &hints, &res) != 0 || res == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve metrics address ", address));
  }
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const bool ok = fd >= 0 && bind(fd, res->ai_addr, res->ai_addrlen) == 0 && listen(fd, 64) == 0;
  freeaddrinfo(res);
  if (!ok) {
    const std::string err = strerror(errno);
    if (fd >= 0) close(fd);
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", address, ": ", err));
  }
  sockaddr_in bound{};
  socklen_t len = sizeof bound;
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  s->registry_ = std::make_shared<prometheus::Registry>();
  s->const_labels_ = std::move(const_labels);
  s->listen_fd_ = fd;
  s->port_ = ntohs(bound.sin_port);
  s->thread_ = std::thread([server = s.get()] { server->Serve(); });
  return s;
}

MetricsServer::~MetricsServer() {
  stop_ = true;
  if (listen_fd_ >= 0) shutdown(listen_fd_, SHUT_RDWR);
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) close(listen_fd_);
}

void MetricsServer::Serve() {
  while (!stop_) {
    const int c = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (stop_ || (errno != EINTR && errno != ECONNABORTED)) break;
      continue;
    }
    timeval tv{5, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    // Read the request head (up to the blank line).
    std::string req;
    char buf[2048];
    while (req.find("\r\n\r\n") == std::string::npos && req.size() < 16384) {
      const ssize_t n = read(c, buf, sizeof buf);
      if (n <= 0) break;
      req.append(buf, static_cast<size_t>(n));
    }
    std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
    if (req.compare(0, 12, "GET /metrics") == 0 && (req.size() == 12 || req[12] == ' ' || req[12] == '?')) {
      body = prometheus::TextSerializer().Serialize(registry_->Collect());
    } else {
      status = "404 Not Found";
      type = "text/plain";
      body = "tandem serves GET /metrics\n";
    }
    const std::string head = absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type,
                                          "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n");
    for (const std::string* part : std::initializer_list<const std::string*>{&head, &body}) {
      size_t off = 0;
      while (off < part->size()) {
        const ssize_t n = send(c, part->data() + off, part->size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
    }
    close(c);
  }
}

const std::vector<double>& LatencyBuckets() {
  static const std::vector<double> b = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2,
                                        0.3,   0.4,    0.5,   0.75, 1.0,  1.5,  2.0,  3.0,  5.0, 7.5,  10.0,
                                        15.0,  20.0,   30.0,  45.0, 60.0, 120.0, 300.0};
  return b;
}

const std::vector<double>& TokenLatencyBuckets() {
  static const std::vector<double> b = {0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025,
                                        0.03,   0.04,  0.05,  0.075, 0.1,   0.15,  0.2,  0.3,   0.5,  1.0,  2.5};
  return b;
}

}  // namespace tandem
