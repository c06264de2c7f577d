// Keeps one ConfigMap key in sync through the Kubernetes API: an ObjectWatch on the ConfigMap
// (read once, then watched from the last resourceVersion, listed again on 410 Gone, backoff
// while the API cannot be reached) that hands out the key's value when it changes. It costs a
// handful of requests per node per hour (one watch per ~10 minutes), never polling.
//
// Threads: a ConfigMapSync has no thread of its own. Its owner either calls Step() in a loop
// (blocking), or Poke() and the ApiClient's Poll() (asynchronous, next to other watches); the
// callbacks run on that same thread.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "kube/api_client.h"
#include "kube/object_watch.h"

namespace shim::kube {

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

  // Blocking: makes one request (a read, or a watch until it ends) and returns how long to
  // wait before the next Step(): zero after a normal end, a backoff after a failure.
  std::chrono::milliseconds Step() { return watch_.Step(); }
  // Asynchronous: see ObjectWatch.
  void Poke() { watch_.Poke(); }
  bool busy() const { return watch_.busy(); }
  ObjectWatch::Clock::time_point due() const { return watch_.due(); }

  SyncState state() const { return state_; }
  const std::string& resource_version() const { return watch_.resource_version(); }

 private:
  void OnObject(const ObjectState& object);
  void OnState(SyncState state, const std::string& detail);

  SyncOptions options_;
  Callbacks callbacks_;
  ObjectWatch watch_;
  SyncState state_ = SyncState::kStarting;
  bool delivered_ = false;  // on_payload was called at least once
  std::optional<std::string> last_payload_;
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
