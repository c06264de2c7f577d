// A gRPC C++ server standing in for the runtime in relay tests: the Echo service on a unix
// socket, with counters the tests assert on. Runs its own gRPC threads.
#pragma once

#include <atomic>
#include <memory>
#include <string>

namespace grpc {
class Server;
}

namespace shimtest {

class FakeRuntime {
 public:
  explicit FakeRuntime(std::string socket_path);
  ~FakeRuntime();

  // For Start(): the SETTINGS_MAX_CONCURRENT_STREAMS the runtime announces (0: gRPC's default).
  void set_max_concurrent_streams(int n) { max_concurrent_streams_ = n; }
  void Start();
  void Stop();  // closes every call at once (a runtime that goes away)
  const std::string& socket_path() const { return socket_path_; }

  struct Counters {
    std::atomic<int> calls{0};
    std::atomic<int> cancelled{0};             // Hang calls that saw the client cancel
    std::atomic<long long> streamed_bytes{0};  // payload written by ServerStream so far
    std::atomic<int> last_metadata_seen{0};    // 1 when the last Unary carried x-test-meta
    std::atomic<long long> last_deadline_ms{-1};
    std::atomic<int> in_flight{0};  // calls being served now
  };
  Counters& counters() { return *counters_; }

 private:
  std::string socket_path_;
  std::unique_ptr<Counters> counters_;
  class Service;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int max_concurrent_streams_ = 0;
};

}  // namespace shimtest
