// For the two-process GPU transport tests and benchmarks: length-prefixed
// messages over a pipe between the test and its decode child.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <string>

namespace tandem {

inline bool WriteMsg(int fd, const std::string& s) {
  const uint64_t n = s.size();
  return write(fd, &n, sizeof(n)) == sizeof(n) && (n == 0 || write(fd, s.data(), n) == static_cast<ssize_t>(n));
}

inline bool ReadMsg(int fd, std::string* s) {
  uint64_t n = 0;
  if (read(fd, &n, sizeof(n)) != sizeof(n) || n > (1u << 24)) return false;
  s->resize(n);
  size_t got = 0;
  while (got < n) {
    const ssize_t r = read(fd, s->data() + got, n - got);
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

}  // namespace tandem
