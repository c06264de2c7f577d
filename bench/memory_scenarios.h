// The memory figures of cri-bench beyond the idle shim of the main run: a shim as it idles on a
// real node (watching its ConfigMap over TLS), and what floods of concurrent calls leave behind.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "proc_stats.h"

namespace shim::bench {

// A shim with the same registry and runtime as the main run, but with its ConfigMap merged from
// a Kubernetes API test server over TLS (bearer token, the CA in the kubeconfig), as on every
// real node: read once the watch is open and the shim has been idle for `settle_ms`.
struct ConfigMapIdle {
  ProcessMemory memory;
  std::string payload_note;  // what the ConfigMap held
};
ConfigMapIdle MeasureIdleWatchingConfigMap(const std::string& shim_binary,
                                           const std::string& runtime_socket,
                                           const std::string& registry_address,
                                           const std::string& registry_auth, int settle_ms);

// Floods of `calls` concurrent unary calls (Version and ImageStatus of `image`, alternating)
// over `connections` connections of their own, `bursts` times in a row; VmRSS of the shim after
// each, then `idle_ms` after their connections closed. Throws when a call fails.
struct BurstMemory {
  int connections = 0, calls = 0;
  long long before = -1;         // VmRSS before the first flood, KiB
  std::vector<long long> after;  // after each flood (300 ms later)
  std::vector<double> took_ms;   // each flood, first call to last answer
  long long after_idle = -1;     // `idle_ms` after the flood connections closed
  int idle_ms = 0;
  ProcessMemory idle_memory;  // the breakdown at that point
};
BurstMemory MeasureBursts(pid_t shim_pid, const std::string& shim_socket, const std::string& image,
                          int bursts, int connections, int calls, int idle_ms);

}  // namespace shim::bench
