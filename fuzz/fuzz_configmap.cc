// Fuzz target: the ConfigMap payload check and merge (src/config/configmap.h MergeConfigMap).
// Input: "<local file>\n%%%%\n<payload>", or a payload alone merged into a fixed local file.
// Properties: never throws, never crashes; an accepted merge loads, keeps the node's own keys
// (shim, cri, configMap, metricsAddress) from the local file, and is idempotent: merging the same
// payload into the result changes nothing.
#include <cstddef>
#include <cstdint>
#include <string>

#include "config/configmap.h"
#include "config/loader.h"
#include "fuzz_check.h"

namespace config = shim::config;

namespace {

const char kLocal[] = R"(shim: /run/fuzz/shim.sock
cri: /run/fuzz/containerd.sock
address: https://local.example.com
auth: "local-user:local-password"
registries:
  - address: http://backup.example.com:5000/cache
    auth: "backup:backup-password"
    prefixes: [quay.io/, docker.io/team/]
timeout: 10m
configMap:
  namespace: fuzz-system
  name: fuzz-shim
metricsAddress: "127.0.0.1:19999"
)";

const char kSeparator[] = "\n%%%%\n";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string input(reinterpret_cast<const char*>(data), size);
  std::string local = kLocal;
  std::string payload = input;
  if (size_t at = input.find(kSeparator); at != std::string::npos) {
    local = input.substr(0, at);
    payload = input.substr(at + sizeof kSeparator - 1);
  }

  config::MergeResult merged =
      config::MergeConfigMap(local, "local.yaml", payload, "ConfigMap fuzz/shim key registries");
  if (!merged.ok()) return 0;
  FUZZ_CHECK(merged.loaded.ok() && merged.loaded.config != nullptr, "ok but not loaded");
  const config::Config& c = *merged.loaded.config;

  config::LoadResult before = config::ParseConfig(local, "local.yaml");
  if (before.ok()) {
    const config::Config& l = *before.config;
    FUZZ_CHECK(c.shim_socket == l.shim_socket && c.cri_socket == l.cri_socket && c.kube == l.kube &&
                   c.metrics == l.metrics,
               "the payload changed a node key");
  }

  config::MergeResult twice =
      config::MergeConfigMap(merged.text, "merged.yaml", payload, "ConfigMap again");
  FUZZ_CHECK(twice.ok(), "the same payload is rejected the second time: %s\n--- merged:\n%s",
             twice.errors.empty() ? "" : twice.errors[0].c_str(), merged.text.c_str());
  FUZZ_CHECK(!twice.changed, "merging the same payload twice changes the file:\n%s\n--- then:\n%s",
             merged.text.c_str(), twice.text.c_str());
  FUZZ_CHECK(*twice.loaded.config == c, "merging the same payload twice changes the config");
  return 0;
}
