// The daemon's lifecycle: lock, sockets, signals, reload, the event loop. Called from main only.
#pragma once

#include <iosfwd>
#include <string>

#include "config/config.h"

namespace shim::daemon {

struct Options {
  std::string config_path;
  bool debug = false;  // --debug: forces debug logging on whatever the file says
};

// Runs until SIGTERM or SIGINT. Returns the process exit code.
int Run(const Options& options);

// The runtime checks of --dry-run: connects to config.cri_socket, calls Version over v1 and
// v1alpha2 and prints what it found to `out`. Returns false when the runtime cannot be reached.
bool CheckRuntime(const config::Config& config, std::ostream& out);

// The registry checks of --dry-run: probes each configured registry once (GET /v2/, and its
// credentials) and prints up, down with the reason, or credentials rejected. Never prints a
// password.
void CheckRegistries(const config::Config& config, std::ostream& out);

}  // namespace shim::daemon
