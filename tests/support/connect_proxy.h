// A real HTTP CONNECT proxy for tests: listens on 127.0.0.1:<free port>, accepts
// `CONNECT host:port`, records each target and the Proxy-Authorization header if any, connects
// to the address its own host map gives for that host (so test names need no /etc/hosts entry,
// and no DNS: a host not in the map is answered 502 at once), answers 200 and then pipes bytes
// both ways. Anything other than CONNECT is answered 405 and recorded.
// One thread per connection. Every public method is thread-safe. For tests only.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace shim::testing {

class ConnectProxy {
 public:
  struct Request {
    std::string method;               // "CONNECT", or what else came
    std::string target;               // "host:port" as asked
    std::string proxy_authorization;  // "" when none was sent
  };

  // `hosts`: the only hosts the proxy reaches, each with its numeric address (e.g.
  // {"kube-api.test", "127.0.0.1"}).
  explicit ConnectProxy(std::map<std::string, std::string> hosts = {});
  ~ConnectProxy();  // closes the listener and every tunnel, joins every thread
  ConnectProxy(const ConnectProxy&) = delete;
  ConnectProxy& operator=(const ConnectProxy&) = delete;

  int port() const { return port_; }
  std::string Url() const;  // "http://127.0.0.1:PORT"
  std::vector<Request> requests() const;

 private:
  void Accept();
  void Serve(int client);

  std::map<std::string, std::string> hosts_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  mutable std::mutex mutex_;
  std::vector<Request> requests_;     // GUARDED_BY(mutex_)
  std::vector<int> open_;             // GUARDED_BY(mutex_): sockets to shut down at the end
  std::vector<std::thread> workers_;  // GUARDED_BY(mutex_)
};

}  // namespace shim::testing
