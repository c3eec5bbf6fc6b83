// Throwaway certificates for TLS tests, made at test time by
// make_test_certs.sh (openssl): a cluster CA with one certificate every
// process uses, and an unrelated CA with a stranger's certificate.
#pragma once

#include <cstdlib>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "tests/testing/paths.h"

namespace tandem::testing {

struct TestCerts {
  std::string ca;                      // the cluster CA
  std::string cert, key;               // issued by it (server and client use)
  std::string other_ca;                // an unrelated CA
  std::string other_cert, other_key;   // issued by the unrelated CA
  // The name every certificate carries besides localhost and 127.0.0.1.
  std::string server_name = "tandem-cluster";
};

inline absl::StatusOr<TestCerts> MakeTestCerts(const std::string& dir) {
  const std::string cmd =
      absl::StrCat("bash '", SourceDir(), "/tests/testing/make_test_certs.sh' '", dir, "'");
  if (std::system(cmd.c_str()) != 0) return absl::InternalError(absl::StrCat("failed: ", cmd));
  TestCerts c;
  c.ca = dir + "/ca.pem";
  c.cert = dir + "/cluster.pem";
  c.key = dir + "/cluster.key";
  c.other_ca = dir + "/other-ca.pem";
  c.other_cert = dir + "/other.pem";
  c.other_key = dir + "/other.key";
  return c;
}

}  // namespace tandem::testing
