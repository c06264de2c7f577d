// A TCP server on a loopback port that accepts connections and never answers: a registry that
// hangs. Connections stay open until the server is destroyed.
#pragma once

#include <atomic>
#include <thread>
#include <vector>

namespace shim::testing {

class SilentServer {
 public:
  SilentServer();  // throws std::runtime_error when it cannot listen
  ~SilentServer();
  SilentServer(const SilentServer&) = delete;
  SilentServer& operator=(const SilentServer&) = delete;

  int port() const { return port_; }
  // Connections accepted so far (a caller is waiting on this server).
  int held() const { return held_count_; }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::vector<int> held_;  // accept thread only until it is joined
  std::atomic<int> held_count_{0};
  std::thread thread_;
};

}  // namespace shim::testing
