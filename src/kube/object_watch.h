// Keeps one Kubernetes object (a ConfigMap, a Secret) in view through the API: read it once,
// then watch it (a long-lived watch of the collection with fieldSelector metadata.name=NAME,
// resumed from the last resourceVersion, listed again on 410 Gone), with exponential backoff
// while the API cannot be reached. A handful of requests per object per hour, never polling.
//
// Asynchronous: Poke() starts the next request when one is due and returns at once; the
// answers come through the ApiClient's Poll() on the same thread, which is how one thread
// watches the ConfigMap and every Secret it names at the same time. Step() is the blocking
// form (one request, to its end). Threads: the owner's thread only; callbacks run on it.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include "kube/api_client.h"

namespace shim::kube {

enum class SyncState {
  kStarting,      // nothing read yet
  kSynced,        // read, and (ConfigMap) the key is present
  kKeyAbsent,     // the ConfigMap exists without the key
  kAbsent,        // the object does not exist
  kUnauthorized,  // 401 or 403: credentials or RBAC (deploy/rbac.yaml)
  kUnreachable,   // no answer: connection, TLS, timeout
  kError,         // an answer the shim cannot use (other HTTP status, bad JSON)
};
const char* SyncStateName(SyncState state);

struct SyncOptions {
  std::string namespace_ = "kube-system";
  std::string name = "image-cri-shim";
  std::string key = "registries.yaml";  // ConfigMapSync only
  // The server ends each watch after this (timeoutSeconds), varied by +-10% so that thousands
  // of nodes started together do not come back together. About 6 watches an hour.
  std::chrono::milliseconds watch_timeout = std::chrono::minutes(10);
  // Waits after a failure: doubled each time up to the maximum, +-20% jitter, reset on success.
  std::chrono::milliseconds backoff_initial = std::chrono::seconds(1);
  std::chrono::milliseconds backoff_max = std::chrono::minutes(5);

  // Multiplies every duration above (hidden test knob: a steady hour scaled down to seconds).
  SyncOptions Scaled(double factor) const;
};

// What the shim uses of one object. Secrets keep their `data` base64 as the API gives it.
struct ObjectState {
  bool exists = false;
  std::string type;                         // `type` (Secrets); "" when absent
  std::map<std::string, std::string> data;  // `data`
  bool operator==(const ObjectState&) const = default;
};

class ObjectWatch {
 public:
  using Clock = std::chrono::steady_clock;
  struct Callbacks {
    // The object changed (the first answer always counts as one); exists = false when it is
    // absent (404) or was DELETED. Runs after on_state for the same answer; object() already
    // holds it when on_state runs.
    std::function<void(const ObjectState& object)> on_object;
    // Every outcome of a request; the owner logs only changes. `detail` has no secrets.
    std::function<void(SyncState state, const std::string& detail)> on_state;
  };

  // `resource` is the plural path segment: "configmaps" or "secrets". `options.namespace_` and
  // `options.name` name the object. `api` must outlive this object.
  ObjectWatch(ApiClient& api, std::string resource, SyncOptions options, Callbacks callbacks);
  ~ObjectWatch();  // cancels the request in flight
  ObjectWatch(const ObjectWatch&) = delete;
  ObjectWatch& operator=(const ObjectWatch&) = delete;

  // Starts the next request if none is in flight and its time has come.
  void Poke();
  bool busy() const { return request_ != 0; }
  // When Poke() has something to do (only meaningful when !busy()).
  Clock::time_point due() const { return due_; }
  // Blocking: starts the next request now, waits for its end (ApiClient::Await) and returns
  // how long to wait before the next one: zero after a normal end, a backoff after a failure.
  std::chrono::milliseconds Step();

  SyncState state() const { return state_; }
  const std::string& resource_version() const { return resource_version_; }
  const std::optional<ObjectState>& object() const { return object_; }  // last seen
  // "configmaps kube-system/x", for messages.
  std::string Describe() const;

 private:
  struct WatchRun {
    bool gone = false;    // 410: list again
    bool broken = false;  // an event the shim cannot read
    int events = 0;
    std::string problem;
    std::chrono::milliseconds timeout{0};
    Clock::time_point started;
  };

  void Start();
  void StartList();
  void StartWatch();
  void OnList(const std::string& path, const Response& response);
  void OnWatchLine(std::string_view line);
  void OnWatchDone(const Response& response);
  void Finish(std::chrono::milliseconds delay);
  void Answer(SyncState state, const std::string& detail, ObjectState object);
  void SetState(SyncState state, const std::string& detail);
  std::chrono::milliseconds Backoff();
  std::chrono::milliseconds Jitter(std::chrono::milliseconds base, double spread);

  ApiClient& api_;
  std::string resource_;
  SyncOptions options_;
  Callbacks callbacks_;
  std::mt19937_64 random_;

  ApiClient::RequestId request_ = 0;  // in flight; 0 = none
  Clock::time_point due_ = Clock::now();
  std::chrono::milliseconds last_delay_{0};
  WatchRun run_;

  bool need_list_ = true;
  std::string resource_version_;
  std::optional<ObjectState> object_;
  SyncState state_ = SyncState::kStarting;
  std::chrono::milliseconds backoff_{0};
  int gone_in_a_row_ = 0;  // 410 answers without an event between them
};

// Percent-encodes everything but unreserved characters (RFC 3986).
std::string UrlEncode(std::string_view text);

}  // namespace shim::kube
