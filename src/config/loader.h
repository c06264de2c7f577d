// Reads and validates the local YAML configuration. Thread-safe (no shared state).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "config/config.h"

namespace shim::config {

struct LoadResult {
  ConfigPtr config;                   // set only when errors is empty
  std::vector<std::string> errors;    // each names the source, key path, bad value, expectation
  std::vector<std::string> warnings;  // unknown keys and the like; never fatal
  bool ok() const { return errors.empty(); }
};

// `source` names the input in messages (a file path). Never throws.
LoadResult ParseConfig(const std::string& yaml_text, const std::string& source);

// Reads `path` and parses it; a missing or unreadable file is an error naming the path.
LoadResult LoadConfigFile(const std::string& path);

// Parses a Go-style duration ("30s", "15m", "1h30m", "500ms", "1.5h"). Returns false on bad
// input. Sub-millisecond parts are truncated.
bool ParseDuration(const std::string& text, std::chrono::milliseconds* out);

// The inverse, in the shortest Go form: "15m", "1h30m", "1s500ms", "0s".
std::string FormatDuration(std::chrono::milliseconds duration);

// The effective configuration as YAML, in the file's own keys, with every password masked
// (Masked()): what --dry-run prints. Never contains a password.
std::string ToMaskedYaml(const Config& config);

}  // namespace shim::config
