// Whether an HTTP client is still connected while its request runs.
//
// cpp-httplib 0.11 (Debian 12) gives a handler no way to learn that its
// client left (later versions added Request::is_connection_closed), and a
// request that waits in the admission queue or for its prompt writes
// nothing that could fail. So the handler finds its own connection's
// socket once, by the addresses httplib records on the Request, and the
// request's cancel watcher peeks at it: end of stream means the client
// closed. The socket stays open while the handler (and its content
// provider) runs, so the descriptor cannot be reused under us.
#pragma once

#include <string>

namespace tandem::router::http {

class ConnectionWatch {
 public:
  // The socket connected from remote_addr:remote_port to local_port; not
  // watching (never reports closed) when none is found.
  ConnectionWatch(const std::string& remote_addr, int remote_port, int local_port);
  // True once the peer closed (or shut down) its side or the connection
  // broke. Cheap (a zero-timeout poll); safe from any thread.
  bool PeerClosed() const;
  bool watching() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

}  // namespace tandem::router::http
