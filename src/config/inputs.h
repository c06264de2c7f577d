// Everything the running configuration is made of, as one value, and the one function that turns
// it into a Config. The file source (inotify, interval, SIGHUP), the Kubernetes source (the
// ConfigMap and Secret watches), the state directory and --dry-run only produce inputs; the
// daemon and --dry-run both call Resolve. Pure values and functions: no I/O, no shared state,
// callable from any thread.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.h"
#include "config/loader.h"

namespace shim::config {

// One entry of a dockerconfigjson Secret's `auths`, or why it cannot be used.
struct DockerAuth {
  std::string username;
  std::string password;
  std::string error;  // set: unusable (never a secret)
  bool ok() const { return error.empty(); }
  bool operator==(const DockerAuth&) const = default;
};

// What a Secret named by `authSecret` holds for registries (kube/docker_config.h reads it), or
// why it cannot supply any.
struct DockerConfig {
  std::string error;  // set: the whole Secret is unusable (never a secret)
  // In the document's order; the key as written ("reg.example.com:5000", "https://reg/v1/").
  std::vector<std::pair<std::string, DockerAuth>> auths;
  bool ok() const { return error.empty(); }
  bool operator==(const DockerConfig&) const = default;

  // The entry for the registry host `host` (as RegistryHostKey gives it: "reg.example.com",
  // "reg.example.com:5000"). Keys match after the same normalisation (scheme, path, default port
  // and case dropped), so "https://Reg.example.com/v1/" matches "reg.example.com". A key written
  // exactly as `host` wins over one that only normalises to it; otherwise the first in the
  // document. nullptr when none matches.
  const DockerAuth* Find(std::string_view host) const;
};

// The ConfigMap's side of the inputs: its payload and the Secrets the payload names.
struct ConfigMapInput {
  std::string namespace_ = {};  // where the ConfigMap and its Secrets live
  std::string name = {};
  std::string key = {};
  std::string payload = {};  // the value of `key`
  // By Secret name: what each Secret the payload names (authSecret) held when read. A name
  // missing here has not been read; a Secret that could not be read has `error` set.
  std::map<std::string, DockerConfig> secrets = {};
  bool operator==(const ConfigMapInput&) const = default;

  // The input of the ConfigMap `settings` name, with no payload yet.
  static ConfigMapInput For(const KubeSync& settings);
  // Whether this is the input of the ConfigMap `settings` name (one saved for another ConfigMap
  // no longer applies).
  bool IsFor(const KubeSync& settings) const;
  // "ConfigMap kube-system/image-cri-shim key registries.yaml": how messages name it.
  std::string Describe() const;
};

struct ConfigInputs {
  std::string file_path = {};   // names the local file in messages
  std::string file_text = {};   // its content
  std::string file_error = {};  // set: the file could not be read (file_text is then unused)
  std::optional<ConfigMapInput> configmap = {};  // unset: no ConfigMap applies
  bool operator==(const ConfigInputs&) const = default;
};

struct Resolved {
  ConfigPtr config;                   // set only when errors is empty
  std::vector<std::string> errors;    // every problem, each naming its source
  std::vector<std::string> warnings;  // never fatal
  Origins origins;                    // where each value came from (ToMaskedYaml)
  bool ok() const { return errors.empty(); }
};

// The configuration the inputs make, or every error. Merge rules:
// - `shim`, `cri`, `configMap`, `metricsAddress` and `stateDir` belong to the node: only the
//   local file sets them (in the payload they are ignored with a warning).
// - Every other top-level key the payload sets wins over the file's; a key it leaves out keeps
//   the file's value (a payload without `registries` keeps the file's list). A list such as
//   `pin`, `allow`, `deny` or `prePull` is replaced whole, never joined with the file's.
// - The registry list is the primary (the payload's if it names one, else the file's) followed by
//   `registries` (the payload's if it has the key, else the file's). Each registry (host and
//   path) appears once, at its first position. Its settings (`auth`, `prefixes`, `namespaces`,
//   ...) are the file's for that registry, with every setting the payload gives for it winning:
//   so a payload that promotes the file's backup to primary keeps that backup's credentials and
//   namespaces, and a registry's credentials never go to another registry.
// - A payload `auth` without an address is the credentials of the primary the file names.
// - A duplicate inside one source is that source's error; the merge itself adds none.
Resolved Resolve(const ConfigInputs& inputs);

}  // namespace shim::config
