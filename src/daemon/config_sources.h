// The configuration pipeline of the daemon: the inputs (the local file, watched with inotify on
// its directory, every reloadInterval and on SIGHUP; the ConfigMap and the Secrets it names,
// through kube::ConfigMapWatch) go through config::Resolve, and every configuration that
// resolves is published with ConfigStore::Swap. One that does not is logged with every reason,
// counted as failed, and the running one keeps serving. The ConfigMap input last applied is kept
// under `stateDir` (config/state_dir.h), so a restart while the API server is unreachable
// serves it. The operator's file is only read.
//
// Threads: ConfigSources owns one background thread that does all the blocking work (files,
// HTTP). Construct, Start and Stop from one thread (the daemon's main thread); RequestReload and
// stats() may be called from any thread and never block on I/O, so the relay's event loop may
// call them.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "config/inputs.h"
#include "config/store.h"
#include "kube/credentials.h"

namespace shim::daemon {

enum class ReloadSource { kFile, kInterval, kSignal, kConfigMap };
inline constexpr size_t kReloadSourceCount = 4;
const char* ReloadSourceName(ReloadSource source);  // "file", "interval", "signal", "configmap"

// Counters and sync state, for logs now and a metrics endpoint later. A copy, taken under lock.
struct ConfigSourceStats {
  std::array<uint64_t, kReloadSourceCount> reloads_ok{};      // indexed by ReloadSource
  std::array<uint64_t, kReloadSourceCount> reloads_failed{};  // rejected: old config serves
  // "disabled", "no-credentials", or kube::SyncStateName() ("synced", "unreachable", ...).
  std::string sync_state = "starting";
  std::string credentials;  // Credentials::Describe() of what was found, "" when none
  // Secrets named by the ConfigMap (authSecret), by name: "synced", "secret-absent",
  // "unauthorized", ... Empty when the ConfigMap names none.
  std::map<std::string, std::string> secret_states;
  std::optional<std::chrono::system_clock::time_point> last_reload_ok;  // any source
  std::optional<std::chrono::system_clock::time_point> last_sync_ok;    // API answered usefully
};

// The configuration the daemon starts with: the local file merged with the ConfigMap input saved
// under `stateDir` when there is one that still resolves, else the file alone.
struct StartupConfig {
  config::Resolved resolved;
  std::optional<config::ConfigMapInput> configmap;  // the saved input in `resolved`, if any
};
// `announce`: say in the log when the saved ConfigMap applies (the daemon does; `rewrite` not).
StartupConfig ResolveAtStart(const std::string& config_path, bool announce = true);

struct ConfigSourcesOptions {
  std::string config_path = {};
  // The ConfigMap input the store's configuration was resolved with (StartupConfig).
  std::optional<config::ConfigMapInput> initial_configmap = {};
  bool force_debug = false;  // --debug: debug logging whatever the file says
  // Called on the sources' thread after a reload asked for by RequestReload() finished (ok or
  // not): the daemon tells systemd it is ready again.
  std::function<void()> on_requested_reload_done = {};
  // Called on the sources' thread after a reload published a new configuration.
  std::function<void()> on_published = {};
  // Where Kubernetes credentials are looked for (tests replace it).
  kube::DiscoveryEnv discovery = kube::DiscoveryEnv::System();
  // Multiplies the watch timeout and backoff of the ConfigMap sync; 0 = from the environment
  // variable SHIM_KUBE_TIME_SCALE (a hidden test knob), else 1.
  double kube_time_scale = 0;
};

class ConfigSources {
 public:
  // `store` holds the configuration the daemon started with and must outlive this object.
  ConfigSources(ConfigSourcesOptions options, config::ConfigStore& store);
  ~ConfigSources();  // Stop()
  ConfigSources(const ConfigSources&) = delete;
  ConfigSources& operator=(const ConfigSources&) = delete;

  // Starts the thread. REQUIRES: not started yet.
  void Start();
  // Asks for a re-read of the file, the ConfigMap and the Secrets it names (SIGHUP): one read
  // each, then the watches go on. Returns at once; the reload runs on the thread.
  void RequestReload();
  // Stops the thread, abandoning a watch in progress. Idempotent.
  void Stop();

  ConfigSourceStats stats() const;

 private:
  class Worker;
  ConfigSourcesOptions options_;
  config::ConfigStore& store_;
  int wake_fd_ = -1;  // eventfd: RequestReload and Stop wake the thread through it
  std::atomic<bool> reload_requested_{false};
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  mutable std::mutex stats_mutex_;
  ConfigSourceStats stats_;  // GUARDED_BY(stats_mutex_)
};

}  // namespace shim::daemon
