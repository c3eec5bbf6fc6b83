#include "router/http/connection_watch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace tandem::router::http {
namespace {

int PortOf(int fd, bool peer) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) : getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

TEST(ConnectionWatchTest, FindsTheServerSideSocketAndSeesTheClientClose) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  addr.sin_port = htons(static_cast<uint16_t>(PortOf(listener, false)));
  const int client = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const int server = accept(listener, nullptr, nullptr);
  ASSERT_GE(server, 0);

  // What httplib records on the Request: the peer's address and port and
  // the local port.
  ConnectionWatch watch("127.0.0.1", PortOf(server, true), PortOf(server, false));
  ASSERT_TRUE(watch.watching());
  EXPECT_FALSE(watch.PeerClosed());
  // Data waiting (a pipelined request) is not a close; a close behind it
  // is.
  ASSERT_EQ(write(client, "x", 1), 1);
  EXPECT_FALSE(watch.PeerClosed());
  close(client);
  EXPECT_TRUE(watch.PeerClosed());

  // A connection that is not ours is not watched (and never "closed").
  ConnectionWatch none("127.0.0.1", 1, 1);
  EXPECT_FALSE(none.watching());
  EXPECT_FALSE(none.PeerClosed());
  close(server);
  close(listener);
}

}  // namespace
}  // namespace tandem::router::http
