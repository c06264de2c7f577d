// The benchmark's CRI client: the only translation unit of cri-bench that includes gRPC headers.
// One BenchChannel per target (one HTTP/2 connection, as kubelet keeps one per endpoint); one
// BenchCaller per calling thread, each with its own completion queue that the caller's thread
// drives itself (no hand-off to a gRPC thread and back, the cheapest unary call gRPC C++ has),
// so the client adds as little as it can to what is measured.
#pragma once

#include <memory>
#include <string>

namespace shim::bench {

class BenchChannel {
 public:
  // `socket_path` of a unix socket; channel arguments as kubelet sets them (16 MiB answers,
  // authority "localhost"), no subchannel sharing with other channels of the process.
  explicit BenchChannel(const std::string& socket_path);
  ~BenchChannel();
  BenchChannel(const BenchChannel&) = delete;
  BenchChannel& operator=(const BenchChannel&) = delete;

  const std::string& socket_path() const { return socket_path_; }

 private:
  friend class BenchCaller;
  struct Impl;
  std::string socket_path_;
  std::unique_ptr<Impl> impl_;
};

// The outcome of one call.
struct CallResult {
  bool ok = false;
  size_t response_bytes = 0;
  std::string error;  // "UNAVAILABLE: ..." when !ok
};

// Makes calls on a channel from one thread at a time. Requests are serialized once up front.
class BenchCaller {
 public:
  explicit BenchCaller(BenchChannel& channel);
  ~BenchCaller();
  BenchCaller(const BenchCaller&) = delete;
  BenchCaller& operator=(const BenchCaller&) = delete;

  // One unary call of `path` with the message bytes `request`; blocks until it is answered.
  // `response` (may be null) receives the answer's bytes.
  CallResult Call(const std::string& path, const std::string& request,
                  std::string* response = nullptr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Floods: `calls` calls (Version and ImageStatus of `image`, alternating) started at once, spread
// over connections of their own, as many kubelets (or one misbehaving client) would load the shim.
class BenchFlood {
 public:
  struct Result {
    int ok = 0;
    double took_ms = 0;       // first start to last answer
    std::string first_error;  // "" when every call succeeded
  };
  // `connections` connections to `socket_path`; throws when they cannot connect within 10 s.
  BenchFlood(const std::string& socket_path, int connections, int calls, const std::string& image);
  ~BenchFlood();
  BenchFlood(const BenchFlood&) = delete;
  BenchFlood& operator=(const BenchFlood&) = delete;

  Result Run();  // one flood

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shim::bench
