#include "test_ca.h"

#include <unistd.h>

#include <cstdlib>
#include <random>
#include <stdexcept>

#include "subprocess.h"
#include "test_util.h"

namespace shim::testing {

TestCa::TestCa() {
  const char* dir = getenv("SHIM_TEST_CA_DIR");
  if (dir == nullptr || *dir == '\0') {
    throw std::runtime_error(
        "SHIM_TEST_CA_DIR is not set: run this under tests/e2e/sandbox.sh, which creates a test CA "
        "and makes it trusted inside a private mount namespace");
  }
  dir_ = dir;
  if (access(cert_path().c_str(), R_OK) != 0 || access((dir_ + "/ca.key").c_str(), R_OK) != 0) {
    throw std::runtime_error("SHIM_TEST_CA_DIR=" + dir_ + " lacks a readable ca.crt and ca.key");
  }
}

TestCa::TestCa(std::string dir) : dir_(std::move(dir)) {}

bool TestCa::Available() {
  const char* dir = getenv("SHIM_TEST_CA_DIR");
  return dir != nullptr && *dir != '\0' &&
         access((std::string(dir) + "/ca.crt").c_str(), R_OK) == 0 &&
         access((std::string(dir) + "/ca.key").c_str(), R_OK) == 0;
}

ServerCert TestCa::IssueServerCert(const std::string& out_dir,
                                   const std::vector<std::string>& dns_names) const {
  if (dns_names.empty()) throw std::invalid_argument("IssueServerCert: no host names");
  std::string base = out_dir + "/" + dns_names.front();
  ServerCert cert{base + ".crt", base + ".key"};
  std::string csr = base + ".csr";
  std::string ext = base + ".ext";

  std::string san = "subjectAltName=";
  for (const auto& name : dns_names) san += "DNS:" + name + ",";
  san += "IP:127.0.0.1";
  WriteFile(ext, san +
                     "\nbasicConstraints=critical,CA:FALSE\n"
                     "keyUsage=critical,digitalSignature,keyEncipherment\n"
                     "extendedKeyUsage=serverAuth\n");
  RunOrThrow({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
              "-nodes", "-subj", "/CN=" + dns_names.front(), "-keyout", cert.key_path, "-out",
              csr});
  // A random serial instead of -CAcreateserial: no shared serial file beside the CA, so test
  // processes running at the same time do not race on it.
  std::random_device random;
  std::string serial = std::to_string(random()) + std::to_string(random());
  RunOrThrow({"openssl", "x509", "-req", "-in", csr, "-CA", cert_path(), "-CAkey", dir_ + "/ca.key",
              "-set_serial", serial, "-days", "2", "-extfile", ext, "-out", cert.cert_path});
  unlink(csr.c_str());
  unlink(ext.c_str());
  return cert;
}

}  // namespace shim::testing
