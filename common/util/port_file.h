// The file a server writes once it listens, so launchers and tests that
// asked for port 0 learn the ports: "<grpc port>\n<metrics port>\n"
// (the router adds "<http port>\n"),
// written to a temporary name and renamed, so readers never see half.
#pragma once

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"

namespace tandem {

inline bool WritePortFile(const std::string& path, int grpc_port, int metrics_port, int http_port = -1) {
  const std::string tmp = absl::StrCat(path, ".tmp");
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << grpc_port << "\n" << metrics_port << "\n";
    if (http_port >= 0) out << http_port << "\n";
    if (!out) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace tandem
