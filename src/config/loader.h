// Reads and validates the local YAML configuration. Thread-safe (no shared state).
#pragma once

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace shim::config {

struct LoadResult {
  ConfigPtr config;                   // set only when errors is empty
  std::vector<std::string> errors;    // each names the source, key path, bad value, expectation
  std::vector<std::string> warnings;  // unknown keys and the like; never fatal
  bool ok() const { return errors.empty(); }

  // What the text set itself, for merging two sources value by value (config/resolve.h).
  // `keys`: the top-level keys present ("force", "registries", ...). `has_primary`: whether
  // config->registries[0] is the primary (`address`) rather than the first of `registries`.
  // `registry_keys[i]`: the keys config->registries[i] was given ("address", "auth", "prefixes",
  // ...), and `registry_paths[i]` its key path ("address" or "registries[2]").
  std::set<std::string> keys;
  bool has_primary = false;
  std::vector<std::set<std::string>> registry_keys;
  std::vector<std::string> registry_paths;
};

struct ParseOptions {
  // The primary registry (`address`) may be absent: the text is one of several sources and
  // another may give it. Every other check stays.
  bool partial = false;
};

// `source` names the input in messages (a file path). Never throws.
LoadResult ParseConfig(const std::string& yaml_text, const std::string& source,
                       ParseOptions options = {});

// Reads `path` and parses it; a missing or unreadable file is an error naming the path.
LoadResult LoadConfigFile(const std::string& path);

// A registry's host[:port] as the shim keys it: lower case, the scheme's default port (":443"
// for https, ":80" for http) dropped. Docker Hub aliases are folded by image::CanonicalDomain
// on top of it. The one normalisation of registry hosts: the loader, the ConfigMap's
// RegistryHostKey and dockerconfigjson keys all go through it.
std::string NormaliseHostPort(std::string_view hostport, std::string_view scheme);

// Parses a Go-style duration ("30s", "15m", "1h30m", "500ms", "1.5h"). Returns false on bad
// input. Sub-millisecond parts are truncated.
bool ParseDuration(const std::string& text, std::chrono::milliseconds* out);

// The inverse, in the shortest Go form: "15m", "1h30m", "1s500ms", "0s".
std::string FormatDuration(std::chrono::milliseconds duration);

// `imageNames` as the file writes it: "requested" or "registry".
std::string_view ImageNamesName(ImageNames names);

// Where each value of an effective configuration came from, by the key path ToMaskedYaml prints
// ("address", "registries[0].auth", "configMap.name"): "file", "ConfigMap", "Secret ns/name".
// A path without an entry is a default.
using Origins = std::map<std::string, std::string>;

// The effective configuration as YAML, in the file's own keys, with every password masked
// (Masked()): what --dry-run prints. With `origins`, each value carries a comment naming where
// it came from ("# file", "# ConfigMap", "# default"). Never contains a password.
std::string ToMaskedYaml(const Config& config, const Origins* origins = nullptr);

}  // namespace shim::config
