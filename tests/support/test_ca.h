// The test certificate authority: the CA that tests/e2e/sandbox.sh generated and made trusted
// inside its mount namespace (env SHIM_TEST_CA_DIR with ca.crt and ca.key). Issues server
// certificates with the openssl CLI. For tests and test tools; any thread.
#pragma once

#include <string>
#include <vector>

namespace shim::testing {

struct ServerCert {
  std::string cert_path;
  std::string key_path;
};

class TestCa {
 public:
  // Uses SHIM_TEST_CA_DIR; throws std::runtime_error telling to run under sandbox.sh when unset.
  TestCa();
  explicit TestCa(std::string dir);

  // True when SHIM_TEST_CA_DIR points at a usable CA (tests can skip otherwise).
  static bool Available();

  const std::string& dir() const { return dir_; }
  std::string cert_path() const { return dir_ + "/ca.crt"; }

  // Writes out_dir/<first name>.crt and .key: an EC P-256 server certificate for `dns_names`
  // (subjectAltName, plus IP 127.0.0.1), valid two days. Throws with openssl's output on failure.
  ServerCert IssueServerCert(const std::string& out_dir,
                             const std::vector<std::string>& dns_names) const;

 private:
  std::string dir_;
};

}  // namespace shim::testing
