// Runs a Node reference script (tests/js/*.mjs) over a corpus file and
// returns what it printed, cached in the build tree under a key of every
// input (script, corpus, package-lock.json): CTest starts one process per
// test case, and node runs once between them. Header-only, like paths.h.
#pragma once

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include <unistd.h>

#include "tests/testing/paths.h"

namespace tandem::testing {

// The whole file, bytes as they are; empty when it cannot be read.
inline std::string ReadBinaryFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// `node script corpus`'s standard output into *out; false with *error set
// when node cannot run or fails. `cache_name` names the cached copy.
inline bool RunJsReference(const std::string& script, const std::string& corpus, const std::string& cache_name,
                           std::string* out, std::string* error) {
  const std::string lock_file = SourceDir() + "/tests/js/package-lock.json";
  const size_t key =
      std::hash<std::string>()(ReadBinaryFile(corpus) + ReadBinaryFile(script) + ReadBinaryFile(lock_file));
  const std::filesystem::path cache =
      std::filesystem::path(BinaryDir()) / (cache_name + "_" + std::to_string(key) + ".json");
  *out = ReadBinaryFile(cache.string());
  if (!out->empty()) return true;
  const std::string cmd = "node '" + script + "' '" + corpus + "'";
  FILE* f = popen(cmd.c_str(), "r");
  if (f == nullptr) {
    *error = "cannot run: " + cmd;
    return false;
  }
  char buf[65536];
  while (size_t n = fread(buf, 1, sizeof buf, f)) out->append(buf, n);
  if (pclose(f) != 0) {
    *error = "node failed: " + cmd;
    return false;
  }
  // Write, then rename: concurrent test processes never see half a file.
  const std::string tmp = cache.string() + "." + std::to_string(::getpid());
  std::ofstream(tmp, std::ios::binary) << *out;
  std::filesystem::rename(tmp, cache);
  return true;
}

}  // namespace tandem::testing
