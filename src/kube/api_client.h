// A small client of the Kubernetes REST API: one GET, and a watch that streams one JSON object
// per line. ApiClient is the seam the ConfigMap sync is tested through; MakeApiClient builds the
// real one on cpp-httplib (net/http_client.h: TLS verified unless the credentials say otherwise,
// HTTPS_PROXY / NO_PROXY honoured as kubelet honours them).
//
// Threads: a client belongs to one thread. Its blocking calls (Get, Watch, Await) return when the
// answer (or the watch) ends; while they wait they let that thread serve its other events through
// WaitHooks, so one thread can hold a ten-minute watch and still react to file changes at once.
// Its asynchronous calls (StartGet, StartWatch, Poll) let that one thread hold several requests
// at once (the ConfigMap's watch and the watches of the Secrets it names): each request runs on
// a worker thread of its own (cpp-httplib's client blocks) that only buffers; every callback
// runs on the owning thread. Never use it on the relay's event-loop thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kube/credentials.h"
#include "net/proxy.h"

namespace shim::kube {

struct Response {
  int status = 0;        // HTTP status; 0 when no answer came (connection, TLS, timeout)
  std::string body;      // the answer (GET), or the error body (watch with status != 200)
  std::string error;     // transport problem when status == 0 or the stream broke; never a secret
  bool aborted = false;  // WaitHooks::on_wake asked to stop
};

// Lets the calling thread do other work while a request waits on the network.
struct WaitHooks {
  std::vector<int> fds;  // also waited on (readable); e.g. an inotify fd and an eventfd
  // Called after every wait, whether or not one of `fds` is readable. false = abandon the
  // request (the call returns with aborted = true).
  std::function<bool()> on_wake;
  // The longest a single wait may last (so timers of the owner fire on time).
  std::function<std::chrono::milliseconds()> max_wait;
};

class ApiClient {
 public:
  using RequestId = uint64_t;
  using OnLine = std::function<void(std::string_view line)>;
  using OnDone = std::function<void(Response response)>;

  virtual ~ApiClient() = default;

  // GET `path` (e.g. "/api/v1/namespaces/kube-system/configmaps/x"); the whole body. Blocking
  // (StartGet + Await).
  Response Get(const std::string& path);

  // GET `path` as a stream: `on_line` gets each complete line of a 200 answer as it arrives.
  // Returns when the server ends the stream, the connection breaks, or a hook aborts.
  // `timeout` bounds the whole request (the server's timeoutSeconds plus a margin), so a
  // silently dead connection cannot hold the watch forever. Blocking (StartWatch + Await).
  Response Watch(const std::string& path, std::chrono::milliseconds timeout,
                 const std::function<void(std::string_view line)>& on_line);

  // Asynchronous forms: the request starts and the call returns at once. Callbacks run only
  // inside Poll() or Await() on the owning thread, never on a worker thread, so they may start and
  // cancel requests. `on_line` runs for each line of a 200 stream, in order, before `done`.
  // Ids are never reused.
  virtual RequestId StartGet(const std::string& path, OnDone done) = 0;
  virtual RequestId StartWatch(const std::string& path, std::chrono::milliseconds timeout,
                               OnLine on_line, OnDone done) = 0;
  // Abandons a request; its callbacks are not called any more. Unknown or finished ids: no-op.
  virtual void Cancel(RequestId id) = 0;
  // Waits at most `max_wait` for progress of any request in flight or for one of `fds` to be
  // readable, then runs the callbacks that are due. Returns at once when a callback was due.
  virtual void Poll(std::chrono::milliseconds max_wait, const std::vector<int>& fds) = 0;
  // Polls (with the WaitHooks given at construction) until `id` is done: true; or until
  // WaitHooks::on_wake asks to stop: false, and the request is cancelled.
  virtual bool Await(RequestId id) = 0;
  // Requests in flight.
  virtual size_t InFlight() const = 0;
};

// The client for `credentials`. `hooks` may be empty (plain blocking calls). `proxy`: the proxy
// variables to honour; nullopt = the process's environment (tests pass their own).
std::unique_ptr<ApiClient> MakeApiClient(Credentials credentials, WaitHooks hooks = {},
                                         std::optional<net::ProxyEnv> proxy = std::nullopt);

}  // namespace shim::kube
