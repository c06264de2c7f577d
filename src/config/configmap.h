// The ConfigMap's payload (key registries.yaml of kube-system/image-cri-shim by default) and the
// rules that merge it into the local configuration file. Pure functions on text: no I/O, no
// shared state, callable from any thread.
//
// The payload is the documented format
//
//   version: "v1"
//   sealos:   {address: URL, auth: {username: U, password: P}}   # the primary registry
//   registries: [{address: URL, auth: {username: U, password: P}, prefixes: [...],
//                 namespaces: [team-b, "tenant-*"], ...}]
//   reloadInterval: "60s"   force: true   debug: false   timeout: "20m"   fallbackToOrigin: false
//   imageNames: requested   pin: [registry.k8s.io/pause, ...]
//   allow: [registry.company.com/, ...]   deny: [docker.io/evil/, ...]
//   prePull: [registry.k8s.io/pause:3.9, ...]
//
// and also the local file's own forms (`address` and `auth: "user:password"` at the top,
// `auth: "user:password"` in a registry).
//
// Credentials from a Secret: `sealos`, each registry entry, and the top level (next to
// `address`) may carry `authSecret: NAME`, the name of a Secret of type
// kubernetes.io/dockerconfigjson in the ConfigMap's namespace. Its `auths` entry for the
// entry's registry host supplies the user name and password (see kube/docker_config.h). With
// both `auth` and `authSecret`, the Secret wins and `auth` is the fallback while the Secret
// cannot supply them (a warning). With `authSecret` alone, a Secret that cannot supply them
// (absent, wrong type, no entry for the host, unreadable) makes the payload invalid: rejected
// whole, the running configuration keeps serving. The resolved credentials are written to the
// local file in its `auth: "user:password"` form, like those of the ConfigMap itself.
//
// The payload is converted into the local file's keys and then merged with the file by
// config::Resolve (config/inputs.h), which holds the merge rules.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "config/inputs.h"
#include "config/loader.h"

namespace shim::config {

struct MergeResult {
  // The merged configuration, validated whole. Set when errors is empty.
  LoadResult loaded;
  // Problems of either source; each names its source. Never a password.
  std::vector<std::string> errors;
  std::vector<std::string> warnings;
  Origins origins;  // where each value came from
  bool ok() const { return errors.empty(); }
};

// What a Secret named by `authSecret` says for one registry host.
struct SecretAuth {
  std::string username;
  std::string password;
  std::string problem;  // set: why the Secret cannot supply them (never a secret)
  bool ok() const { return problem.empty(); }
};
// (Secret name, registry host as RegistryHostKey gives it) -> credentials or the problem.
using SecretLookup = std::function<SecretAuth(const std::string& secret, const std::string& host)>;

// What the Secret `name` ("kube-system/x"), read as `config`, supplies for the registry `host`
// (RegistryHostKey form): user name and password, or the problem.
SecretAuth SecretAuthFor(const DockerConfig& config, const std::string& name,
                         std::string_view host);

// The payload in the local file's keys, checked against the format above, with the credentials
// of each `authSecret` filled in through `secrets` (without it, --dry-run's view: each
// `authSecret` is a warning and its entry keeps only its `auth`, if any).
struct ConvertedPayload {
  std::string text;  // YAML in the local file's keys; set when errors is empty
  // Key paths in `text` ("auth", "registries[1].auth") whose credentials a Secret supplied, with
  // "Secret ns/name".
  std::map<std::string, std::string> secret_auths;
  std::vector<std::string> errors;  // each names `source`; never a password
  std::vector<std::string> warnings;
};
ConvertedPayload ConvertPayload(const std::string& payload, const std::string& source,
                                const SecretLookup& secrets, const std::string& secret_namespace);

// Checks `payload` (the ConfigMap value), merges it with `local_text` (the local file's
// content) by the rules of config::Resolve and validates the result. Any error rejects the
// payload whole. `source` names the payload in messages, e.g. "ConfigMap
// kube-system/image-cri-shim key registries.yaml"; `local_source` names the file. Never throws.
MergeResult MergeConfigMap(const std::string& local_text, const std::string& local_source,
                           const std::string& payload, const std::string& source,
                           const SecretLookup& secrets = nullptr,
                           const std::string& secret_namespace = "kube-system");

// The Secret names that `payload` refers to with `authSecret` (valid names only, sorted,
// without duplicates); empty when it names none or is not readable YAML.
std::vector<std::string> ReferencedSecrets(const std::string& payload);

// The host[:port] of a registry address or of a .dockerconfigjson `auths` key, as the loader
// keys registries: scheme and path dropped, lower case, the scheme's default port dropped,
// Docker Hub aliases folded. "https://Reg.example.com:443/v1/" -> "reg.example.com". "" when
// there is no valid host.
std::string RegistryHostKey(const std::string& text);

}  // namespace shim::config
