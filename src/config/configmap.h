// The ConfigMap's payload (key registries.yaml of kube-system/image-cri-shim by default) and the
// rules that merge it into the local configuration file. Pure functions on text: no I/O, no
// shared state, callable from any thread.
//
// The payload is the documented format
//
//   version: "v1"
//   sealos:   {address: URL, auth: {username: U, password: P}}   # the primary registry
//   registries: [{address: URL, auth: {username: U, password: P}, prefixes: [...], ...}]
//   reloadInterval: "60s"   force: true   debug: false   timeout: "20m"   fallbackToOrigin: false
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
// Merge rules: a key present in the payload replaces the local one; a key absent keeps the local
// value (a payload without `registries` keeps the local list); `shim`, `cri`, `configMap` and
// `metricsAddress` belong to the node and are never taken from the payload. The primary
// registry's credentials go with its address: a payload that moves the primary to another
// address without giving `auth` makes it anonymous rather than sending the old registry's
// password to the new one.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "config/loader.h"

namespace shim::config {

struct MergeResult {
  // The merged file content (the local file's keys, YAML). Set when errors is empty.
  std::string text;
  // True when `text` differs from the local content in substance (compared after both are
  // re-emitted, so formatting and comments alone do not count): the file needs writing.
  bool changed = false;
  // The merged configuration, validated whole as the loader validates a file.
  LoadResult loaded;
  // Problems of the payload or of the merged result; each names `source`. Never a password.
  std::vector<std::string> errors;
  std::vector<std::string> warnings;
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

// Checks `payload` (the ConfigMap value) against the format above, merges it into `local_text`
// (the local file's content) and validates the result. Any error rejects the payload whole.
// `source` names the payload in messages, e.g. "ConfigMap kube-system/image-cri-shim key
// registries.yaml"; `local_source` names the file. `secrets` resolves `authSecret`; without it
// (--dry-run) each `authSecret` is a warning and its entry keeps only its `auth`, if any.
// Never throws.
MergeResult MergeConfigMap(const std::string& local_text, const std::string& local_source,
                           const std::string& payload, const std::string& source,
                           const SecretLookup& secrets = nullptr);

// The Secret names that `payload` refers to with `authSecret` (valid names only, sorted,
// without duplicates); empty when it names none or is not readable YAML.
std::vector<std::string> ReferencedSecrets(const std::string& payload);

// The host[:port] of a registry address or of a .dockerconfigjson `auths` key, as the loader
// keys registries: scheme and path dropped, lower case, the scheme's default port dropped,
// Docker Hub aliases folded. "https://Reg.example.com:443/v1/" -> "reg.example.com". "" when
// there is no valid host.
std::string RegistryHostKey(const std::string& text);

}  // namespace shim::config
