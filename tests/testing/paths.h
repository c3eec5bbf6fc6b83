// Where the source tree and the build tree are, for tests that read test
// data or run the built binaries. $TANDEM_SOURCE_DIR / $TANDEM_BINARY_DIR
// override the paths CMake compiled in.
#pragma once

#include <cstdlib>
#include <string>

namespace tandem::testing {

inline std::string SourceDir() {
  const char* d = std::getenv("TANDEM_SOURCE_DIR");
  return d != nullptr ? d : TANDEM_TEST_SOURCE_DIR;
}

inline std::string BinaryDir() {
  const char* d = std::getenv("TANDEM_BINARY_DIR");
  return d != nullptr ? d : TANDEM_TEST_BINARY_DIR;
}

}  // namespace tandem::testing
