// Fuzz target: the ConfigMap payload check and merge (config::Resolve, src/config/inputs.h).
// Input: "<local file>\n%%%%\n<payload>", or a payload alone merged with a fixed local file.
// Properties: never throws, never crashes; an accepted merge keeps the node's own keys (shim,
// cri, configMap, metricsAddress, stateDir) from the local file, lists each registry once,
// takes `imageNames`, `pin`, `allow`, `deny` and `prePull` whole from one source (the payload's
// when it sets them, else the file's) and each registry's `namespaces` likewise, gives every
// value an origin that ToMaskedYaml can print, and is a function of its inputs (resolving the
// same inputs again gives the same configuration).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

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
    namespaces: [team-b, "ci-*"]
timeout: 10m
imageNames: registry
pin: [registry.k8s.io/pause, docker.io/team/base/]
allow: [quay.io/, docker.io/team/, registry.k8s.io]
deny: [docker.io/team/bad]
prePull: [registry.k8s.io/pause:3.9, quay.io/org/agent:1]
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

  config::ConfigInputs inputs;
  inputs.file_path = "local.yaml";
  inputs.file_text = local;
  inputs.configmap = config::ConfigMapInput{.namespace_ = "fuzz-system",
                                            .name = "fuzz-shim",
                                            .key = "registries",
                                            .payload = payload,
                                            .secrets = {}};
  config::Resolved merged = config::Resolve(inputs);
  if (!merged.ok()) return 0;
  FUZZ_CHECK(merged.config != nullptr, "ok but no configuration");
  const config::Config& c = *merged.config;

  config::LoadResult before =
      config::ParseConfig(local, "local.yaml", config::ParseOptions{.partial = true});
  if (before.ok()) {
    const config::Config& l = *before.config;
    FUZZ_CHECK(c.shim_socket == l.shim_socket && c.cri_socket == l.cri_socket && c.kube == l.kube &&
                   c.metrics == l.metrics && c.state_dir == l.state_dir,
               "the payload changed a node key");
    // `imageNames` and `pin` are the payload's or the file's, never a mix.
    auto from_payload = [&](const char* key) {
      auto origin = merged.origins.find(key);
      return origin != merged.origins.end() && origin->second == "ConfigMap";
    };
    FUZZ_CHECK(from_payload("imageNames") || c.image_names == l.image_names,
               "imageNames is neither the payload's nor the file's");
    FUZZ_CHECK(from_payload("pin") || c.pin == l.pin,
               "pin is neither the payload's nor the file's");
    FUZZ_CHECK(from_payload("allow") || c.allow == l.allow,
               "allow is neither the payload's nor the file's");
    FUZZ_CHECK(from_payload("deny") || c.deny == l.deny,
               "deny is neither the payload's nor the file's");
    FUZZ_CHECK(from_payload("prePull") || c.pre_pull == l.pre_pull,
               "prePull is neither the payload's nor the file's");
    // A registry's namespaces not given by the payload are the file's for that registry.
    for (size_t i = 0; i < c.registries.size(); ++i) {
      const config::Registry& r = c.registries[i];
      std::string path =
          i == 0 ? "namespaces" : "registries[" + std::to_string(i - 1) + "].namespaces";
      if (from_payload(path.c_str())) continue;
      std::vector<std::string> file_namespaces;
      for (const config::Registry& f : l.registries) {
        if (f.host == r.host && f.path == r.path) file_namespaces = f.namespaces;
      }
      FUZZ_CHECK(r.namespaces == file_namespaces,
                 "registry %s: namespaces neither the payload's nor the file's", r.address.c_str());
    }
  }
  FUZZ_CHECK(!c.registries.empty(), "accepted without a primary registry");
  for (size_t i = 0; i < c.registries.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      FUZZ_CHECK(!(c.registries[i].host == c.registries[j].host &&
                   c.registries[i].path == c.registries[j].path),
                 "registry %s listed twice", c.registries[i].address.c_str());
    }
  }
  std::string printed = config::ToMaskedYaml(c, &merged.origins);
  FUZZ_CHECK(!printed.empty(), "nothing printed");
  config::Resolved again = config::Resolve(inputs);
  FUZZ_CHECK(again.ok() && *again.config == c && again.origins == merged.origins,
             "the same inputs resolve differently");
  return 0;
}
