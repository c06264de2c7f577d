// The sources of the running configuration and the thread that watches them: the local file
// (inotify on its directory, so replacement by rename counts; every reloadInterval; SIGHUP) and
// the Kubernetes ConfigMap (read once, then watched; merged into the file) with the Secrets its
// entries name for their credentials (`authSecret`: each read once, then watched). Every new
// configuration is validated whole and published with ConfigStore::Swap; an invalid one is
// logged with its reason, counted as failed, and the running one keeps serving.
//
// Threads: ConfigSources owns one background thread that does all the blocking work (files,
// HTTP); its API requests (the ConfigMap's watch and one per Secret) share one curl multi
// handle on that thread. Construct, Start and Stop from one thread (the daemon's main thread);
// RequestReload and stats() may be called from any thread and never block on I/O, so the relay's
// event loop may call them.
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

struct ConfigSourcesOptions {
  std::string config_path = {};
  bool force_debug = false;  // --debug: debug logging whatever the file says
  // Called on the sources' thread after a reload asked for by RequestReload() finished (ok or
  // not): the daemon tells systemd it is ready again.
  std::function<void()> on_requested_reload_done = {};
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
  // Asks for a re-read of the file (SIGHUP). Returns at once; the reload runs on the thread.
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
