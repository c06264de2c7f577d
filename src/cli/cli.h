// The command line: parses flags, then runs the daemon, --dry-run, --version or `rewrite`.
// main() only calls Main(). Single-threaded; called once from main before anything else runs.
#pragma once

#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

namespace shim::cli {

constexpr const char* kDefaultConfigPath = "/etc/image-cri-shim/config.yaml";

// Runs the program; returns the process exit code.
int Main(int argc, char** argv);

// "image-cri-shim 0.1.0 (commit abc123), CRI runtime.v1 and runtime.v1alpha2"
std::string VersionLine();

// `rewrite IMAGE...`: prints the candidates of each image, one per line, to `out`, e.g.
//   nginx:latest -> registry.company.com/library/nginx:latest (registry registry.company.com, user
//   admin)
// with the user name but never the password, as a pull for a pod in `pod_namespace` (nullopt:
// a pull without a pod) gets them; an image the policy refuses prints
//   redis:7 -> refused: deny "docker.io/" matches it
// A reference that does not parse is reported on `err` and the others are still printed.
// Returns 0, or 1 if any image was invalid or refused.
int PrintRewrites(const config::Config& config, const std::vector<std::string>& images,
                  const std::optional<std::string>& pod_namespace, std::ostream& out,
                  std::ostream& err);

}  // namespace shim::cli
