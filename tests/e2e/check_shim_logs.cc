// The suite-wide secret check: every shim log the end-to-end tests left in one directory
// (ShimProcess copies each log to $SHIM_E2E_LOG_DIR on Stop) is searched for every test
// password, token and base64 user:password of tests/support/test_secrets.h. ctest runs it after
// the e2e tests (fixture e2e_shim_logs, see CMakeLists.txt beside this file).
//
//   check_shim_logs DIR       exit 0: logs found, no secret in any; 1: a secret, or no log at all
//   check_shim_logs --self-test   plants a secret in a temporary directory and expects the check
//                                 to find it (and a clean log to pass)
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "test_secrets.h"

namespace fs = std::filesystem;
using shim::testing::AllTestSecrets;

namespace {

// "pw-****" style: enough to find the test, not the secret itself.
std::string Hint(const std::string& secret) {
  return secret.substr(0, std::min<size_t>(3, secret.size() / 3)) + "****";
}

// Returns the number of findings; prints each (file, line, masked secret).
int Check(const fs::path& dir, std::ostream& out, int* logs) {
  *logs = 0;
  int findings = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".log") continue;
    ++*logs;
    std::ifstream in(entry.path());
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      for (const auto& secret : AllTestSecrets()) {
        if (line.find(secret) != std::string::npos) {
          out << entry.path().string() << ":" << n << ": secret " << Hint(secret) << "\n";
          ++findings;
        }
      }
    }
  }
  if (ec) out << "cannot read " << dir.string() << ": " << ec.message() << "\n";
  return findings;
}

int SelfTest() {
  fs::path dir = fs::temp_directory_path() / ("check-shim-logs-" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "clean.log") << "2024-05-01T12:00:00.123Z info pull done image=nginx\n";
  std::ostringstream sink;
  int logs = 0;
  bool ok = Check(dir, sink, &logs) == 0 && logs == 1;
  // Each kind of secret: a password, a token, a base64 user:password.
  for (const std::string& planted :
       {std::string("pw-A-7f3k9"), std::string("e2e-kube-token-7c1d0e"),
        shim::testing::Base64Encode("user-b:pw-B-2q8m4")}) {
    std::ofstream(dir / "leak.log") << "2024-05-01T12:00:00.123Z debug auth=" << planted << "\n";
    ok = ok && Check(dir, sink, &logs) == 1 && logs == 2;
  }
  fs::remove_all(dir);
  std::cout << (ok ? "self-test passed\n" : "self-test FAILED: the check misses secrets\n");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: check_shim_logs DIR | --self-test\n";
    return 2;
  }
  if (std::string(argv[1]) == "--self-test") return SelfTest();
  int logs = 0;
  int findings = Check(argv[1], std::cerr, &logs);
  if (logs == 0) {
    std::cerr << "no shim log in " << argv[1]
              << ": no e2e test ran the shim, or ShimProcess no longer copies logs there\n";
    return 1;
  }
  std::cout << logs << " shim logs checked for " << AllTestSecrets().size()
            << " secrets: " << (findings == 0 ? "none found" : std::to_string(findings) + " found")
            << "\n";
  return findings == 0 ? 0 : 1;
}
