// A small client of the Kubernetes REST API: one GET, and a watch that streams one JSON object
// per line. ApiClient is the seam the ConfigMap sync is tested through; MakeApiClient builds the
// real one on libcurl (TLS verified unless the credentials say otherwise).
//
// Threads: a client belongs to one thread, whose calls block until the answer (or the watch)
// ends. While it waits, it lets that thread serve its other events through WaitHooks, so one
// thread can hold a ten-minute watch and still react to file changes at once. Never use it on
// the relay's event-loop thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kube/credentials.h"

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
  virtual ~ApiClient() = default;

  // GET `path` (e.g. "/api/v1/namespaces/kube-system/configmaps/x"); the whole body.
  virtual Response Get(const std::string& path) = 0;

  // GET `path` as a stream: `on_line` gets each complete line of a 200 answer as it arrives.
  // Returns when the server ends the stream, the connection breaks, or a hook aborts.
  // `timeout` bounds the whole request (the server's timeoutSeconds plus a margin), so a
  // silently dead connection cannot hold the watch forever.
  virtual Response Watch(const std::string& path, std::chrono::milliseconds timeout,
                         const std::function<void(std::string_view line)>& on_line) = 0;
};

// The libcurl client for `credentials`. `hooks` may be empty (plain blocking calls).
std::unique_ptr<ApiClient> MakeApiClient(Credentials credentials, WaitHooks hooks = {});

}  // namespace shim::kube
