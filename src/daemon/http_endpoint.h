// The operations endpoint (cpp-httplib, its own thread): /metrics in the Prometheus text
// format, /healthz (the process serves) and /readyz (the CRI socket serves and the runtime
// answers). Meant for loopback: it carries no credentials, but neither does it authenticate.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "util/status.h"

namespace httplib {
class Server;
}

namespace shim::daemon {

class HttpEndpoint {
 public:
  struct Handlers {
    std::function<std::string()> metrics;
    // True when ready; otherwise `why` says what is missing. May block briefly (< 3 s).
    std::function<bool(std::string* why)> ready;
  };

  HttpEndpoint();
  ~HttpEndpoint();  // Stop()

  // Binds `address` ("127.0.0.1:10258", "[::1]:10258") and serves on a thread.
  Status Start(const std::string& address, Handlers handlers);
  void Stop();

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> listen_returned_ = false;  // set by thread_ when it stops serving
};

}  // namespace shim::daemon
