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
// Merge rules: a key present in the payload replaces the local one; a key absent keeps the local
// value (a payload without `registries` keeps the local list); `shim`, `cri`, `configMap` and
// `metricsAddress` belong to the node and are never taken from the payload. The primary
// registry's credentials go with its address: a payload that moves the primary to another
// address without giving `auth` makes it anonymous rather than sending the old registry's
// password to the new one.
#pragma once

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

// Checks `payload` (the ConfigMap value) against the format above, merges it into `local_text`
// (the local file's content) and validates the result. Any error rejects the payload whole.
// `source` names the payload in messages, e.g. "ConfigMap kube-system/image-cri-shim key
// registries.yaml"; `local_source` names the file. Never throws.
MergeResult MergeConfigMap(const std::string& local_text, const std::string& local_source,
                           const std::string& payload, const std::string& source);

}  // namespace shim::config
