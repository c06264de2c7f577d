// Keeps one ConfigMap key in sync through the Kubernetes API: read the object once, then watch
// it (a long-lived watch on that one object, resumed from the last resourceVersion, listed
// again on 410 Gone), with exponential backoff while the API cannot be reached. It costs a
// handful of requests per node per hour (one watch per ~10 minutes), never polling.
//
// Threads: a ConfigMapSync has no thread of its own. Its owner calls Step() in a loop on one
// thread; the callbacks run inside Step() on that same thread.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include "kube/api_client.h"

namespace shim::kube {

enum class SyncState {
  kStarting,      // nothing read yet
  kSynced,        // read, and the key is present
  kKeyAbsent,     // the ConfigMap exists without the key
  kAbsent,        // the ConfigMap does not exist
  kUnauthorized,  // 401 or 403: credentials or RBAC (deploy/rbac.yaml)
  kUnreachable,   // no answer: connection, TLS, timeout
  kError,         // an answer the shim cannot use (other HTTP status, bad JSON)
};
const char* SyncStateName(SyncState state);

struct SyncOptions {
  std::string namespace_ = "kube-system";
  std::string name = "image-cri-shim";
  std::string key = "registries.yaml";
  // The server ends each watch after this (timeoutSeconds), varied by +-10% so that thousands
  // of nodes started together do not come back together. About 6 watches an hour.
  std::chrono::milliseconds watch_timeout = std::chrono::minutes(10);
  // Waits after a failure: doubled each time up to the maximum, +-20% jitter, reset on success.
  std::chrono::milliseconds backoff_initial = std::chrono::seconds(1);
  std::chrono::milliseconds backoff_max = std::chrono::minutes(5);

  // Multiplies every duration above (hidden test knob: a steady hour scaled down to seconds).
  SyncOptions Scaled(double factor) const;
};

class ConfigMapSync {
 public:
  struct Callbacks {
    // The key's value changed; nullopt when the ConfigMap or the key went away. Called only on
    // a change (the first read always counts as one).
    std::function<void(const std::optional<std::string>& payload)> on_payload;
    // Every outcome of a request; the owner logs only changes. `detail` has no secrets.
    std::function<void(SyncState state, const std::string& detail)> on_state;
  };

  // `api` must outlive this object.
  ConfigMapSync(ApiClient& api, SyncOptions options, Callbacks callbacks);

  // Makes one request (a read, or a watch until it ends) and returns how long to wait before
  // the next Step(): zero after a normal end, a backoff after a failure.
  std::chrono::milliseconds Step();

  SyncState state() const { return state_; }
  const std::string& resource_version() const { return resource_version_; }

 private:
  std::chrono::milliseconds List();
  std::chrono::milliseconds Watch();
  void Deliver(const std::optional<std::string>& payload);
  void SetState(SyncState state, const std::string& detail);
  std::chrono::milliseconds Backoff();
  std::chrono::milliseconds Jitter(std::chrono::milliseconds base, double spread);

  ApiClient& api_;
  SyncOptions options_;
  Callbacks callbacks_;
  std::mt19937_64 random_;

  bool need_list_ = true;
  std::string resource_version_;
  bool delivered_ = false;  // on_payload was called at least once
  std::optional<std::string> last_payload_;
  SyncState state_ = SyncState::kStarting;
  std::chrono::milliseconds backoff_{0};
  int gone_in_a_row_ = 0;  // 410 answers without an event between them
};

// One read of the ConfigMap, for --dry-run: `state` says what was found (kSynced, kKeyAbsent,
// kAbsent, or why not), `detail` explains it without secrets, `payload` is the key's value.
struct ReadOnce {
  SyncState state = SyncState::kStarting;
  std::string detail;
  std::optional<std::string> payload;
};
ReadOnce ReadConfigMapOnce(ApiClient& api, const SyncOptions& options);

}  // namespace shim::kube
