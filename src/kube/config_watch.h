// The Kubernetes side of the configuration inputs: watches the ConfigMap (kube-system/
// image-cri-shim key registries.yaml by default) and every Secret its payload names with
// `authSecret`, through one API client, and hands out config::ConfigMapInput values once the
// payload and each Secret it names have answered. It judges nothing: config::Resolve does.
// Logs each change of sync state once; keeps the state for metrics.
//
// Threads: no thread of its own. Its owner (the configuration thread) calls Poll() in a loop;
// the callback runs inside Poll(), on that thread. Not thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/inputs.h"
#include "kube/api_client.h"
#include "kube/configmap_sync.h"
#include "kube/credentials.h"
#include "kube/object_watch.h"

namespace shim::kube {

// What the watch knows, for the metrics endpoint. A copy.
struct ConfigWatchStatus {
  // "disabled", "no-credentials", or SyncStateName() ("synced", "unreachable", ...).
  std::string sync_state = "starting";
  std::string credentials;  // Credentials::Describe() of what was found, "" when none
  // Secrets named by the ConfigMap, by name: "synced", "secret-absent", "unauthorized", ...
  std::map<std::string, std::string> secret_states;
  std::optional<std::chrono::system_clock::time_point> last_sync_ok;  // API answered usefully
};

class ConfigMapWatch {
 public:
  // A new ConfigMap input: the payload with the Secrets it names as last read; nullopt when no
  // ConfigMap applies (it or its key is absent). Called on a change only.
  using OnInput = std::function<void(const std::optional<config::ConfigMapInput>& input)>;

  // Looks for credentials (`discovery`) and starts watching when `settings` ask for it; without
  // credentials, or when the sync is off, it stays idle (said once in the log and in status()).
  // `time_scale` multiplies the watch timeouts and backoffs (tests).
  ConfigMapWatch(const config::KubeSync& settings, const DiscoveryEnv& discovery, double time_scale,
                 OnInput on_input);
  ~ConfigMapWatch();
  ConfigMapWatch(const ConfigMapWatch&) = delete;
  ConfigMapWatch& operator=(const ConfigMapWatch&) = delete;

  // A Secret's content as read, whenever it changes (a Secret this watch reads for the latest
  // payload or for KeepWatching). Runs inside Poll().
  using SecretCallback = std::function<void(const std::string& name, const config::DockerConfig&)>;
  void set_on_secret(SecretCallback on_secret) { on_secret_ = std::move(on_secret); }
  // Secrets to keep watching besides those the latest payload names: those of the ConfigMap
  // input in force, so that their rotation still reaches it while a newer payload is rejected.
  void KeepWatching(std::set<std::string> names) { also_watched_ = std::move(names); }

  // Whether it is watching (credentials found and the sync on).
  bool active() const { return client_ != nullptr; }
  // Runs what is due and waits up to `max_wait` for the API, or for any of `fds` to be readable.
  void Poll(std::chrono::milliseconds max_wait, const std::vector<int>& fds);
  // When the next request of an idle watch is due.
  std::optional<std::chrono::steady_clock::time_point> NextDue() const;

  const ConfigWatchStatus& status() const { return status_; }

 private:
  struct SecretView;
  void OnPayload(const std::optional<std::string>& payload);
  void OnSyncState(SyncState state, const std::string& detail);
  void Settle();
  void ReconcileSecrets();
  void OnSecret(const std::string& name, const ObjectState& object);
  void OnSecretState(const std::string& name, SyncState state, const std::string& detail);
  void Deliver();
  std::string SecretName(const std::string& name) const;
  SyncOptions Timing() const;

  config::KubeSync settings_;
  std::string name_;  // "ConfigMap ns/name key k", for the log
  double time_scale_;
  OnInput on_input_;
  SecretCallback on_secret_;
  std::set<std::string> also_watched_;
  std::unique_ptr<ApiClient> client_;
  std::unique_ptr<ConfigMapSync> sync_;                         // uses client_
  std::map<std::string, std::unique_ptr<SecretView>> secrets_;  // by name; use client_
  bool received_ = false;                                       // the ConfigMap answered once
  std::optional<std::string> payload_;                          // its latest value
  bool dirty_ = false;                                          // Deliver() has something new
  std::optional<std::optional<config::ConfigMapInput>> delivered_;
  std::optional<SyncState> logged_state_;
  ConfigWatchStatus status_;
};

}  // namespace shim::kube
