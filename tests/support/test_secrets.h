// Every credential the end-to-end tests hand to registries, the Kubernetes API test server or the
// shim, in one list: the suite-wide log check (tests/e2e/check_shim_logs.cc, run after the e2e
// tests) searches every shim log for each password and token and for the base64 of each
// user:password (as in a Basic Authorization header or a docker config). A test that uses a new
// credential adds it here (or takes it from here) so that the check covers it.
// Header-only; constants and pure functions, safe from any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace shim::testing {

struct TestCredential {
  std::string_view username;
  std::string_view password;
};

// user:password pairs, by the test that uses them.
inline constexpr TestCredential kTestCredentials[] = {
    {"shim-user", "shim-pass"},  // the harness's default (RegistryOptions)
    // e2e_shim_test.cc
    {"user-a", "pw-A-7f3k9"},
    {"user-b", "pw-B-2q8m4"},
    {"kubelet-user", "kubelet-secret-XYZ"},
    // e2e_failover_test.cc
    {"user-a", "pw-A-7f3k9:x"},
    {"user-b", "pw-B-q8w2e"},
    {"user-a", "wrong-pw-9z"},
    {"user-b", "wrong-pw-9z"},
    // e2e_config_test.cc
    {"cfg-user-a", "cfg-pw-A-83jd"},
    {"cfg-user-b", "cfg-pw-B-19xk"},
    {"cfg-user-b", "wrong-password"},
    // e2e_secret_test.cc
    {"sec-e2e-user", "sec-e2e-pw-1-Hq4v"},
    {"sec-e2e-user", "sec-e2e-pw-2-Tn8c"},
    // e2e_runtime_test.cc (containerd directly, no shim; listed for completeness)
    {"alice", "a:secret with spaces"},
    {"bob", "b-secret"},
    {"carol", "c-secret"},
    // e2e_operations_test.cc
    {"ops-user", "ops-pw-Q4z8v1"},
    {"ops-kubelet", "ops-kubelet-pw-7Hn2"},
    // e2e_names_test.cc
    {"names-user", "names-pw-5t7u"},
    // e2e_container_test.cc
    {"ctr-user", "ctr-pw-8k2m"},
};

// Bearer tokens and other secrets that are not a user:password pair.
inline constexpr std::string_view kTestTokens[] = {
    "e2e-kube-token-7c1d0e",    // e2e_config_test.cc: the Kubernetes API test server's token
    "e2e-secret-token-3b9f",    // e2e_secret_test.cc: the same for its own server
    "names-kube-token-4f8a2c",  // e2e_names_test.cc: the same for its ConfigMap test
};

// Standard base64 with padding.
inline std::string Base64Encode(std::string_view in) {
  static constexpr char kTable[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  auto byte = [&in](size_t at) {
    return static_cast<unsigned>(static_cast<unsigned char>(in[at]));
  };
  for (; i + 2 < in.size(); i += 3) {
    unsigned v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    for (int shift : {18, 12, 6, 0}) out += kTable[v >> shift & 63];
  }
  if (i + 1 == in.size()) {
    unsigned v = byte(i) << 16;
    out += kTable[v >> 18 & 63];
    out += kTable[v >> 12 & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    unsigned v = byte(i) << 16 | byte(i + 1) << 8;
    out += kTable[v >> 18 & 63];
    out += kTable[v >> 12 & 63];
    out += kTable[v >> 6 & 63];
    out += '=';
  }
  return out;
}

// Every string that must never appear in a shim log: passwords, tokens, base64(user:password).
inline std::vector<std::string> AllTestSecrets() {
  std::vector<std::string> secrets;
  for (const auto& c : kTestCredentials) {
    secrets.emplace_back(c.password);
    secrets.push_back(Base64Encode(std::string(c.username) + ":" + std::string(c.password)));
  }
  for (auto token : kTestTokens) secrets.emplace_back(token);
  return secrets;
}

}  // namespace shim::testing
