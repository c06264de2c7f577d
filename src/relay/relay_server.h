// The relay as a whole: accepts kubelet connections on a listening unix socket and serves every
// call on them, intercepted or relayed, through one UpstreamPool.
//
// Loop thread only.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "relay/call_observer.h"
#include "relay/downstream.h"
#include "relay/intercepted_call.h"
#include "relay/upstream.h"

namespace shim::relay {

class RelayServer {
 public:
  // `interceptor` may be null (relay everything) and must outlive the server; so must
  // `observer`, which may be null too.
  RelayServer(EventLoop& loop, std::string runtime_socket, Interceptor* interceptor,
              CallObserver* observer = nullptr);
  ~RelayServer();

  // Serves connections accepted on `listen_fd` (bound, listening, non-blocking; the server
  // does not close it).
  void Serve(int listen_fd);

  // Stops accepting, sends GOAWAY on every connection and lets calls in flight finish; after
  // `grace`, resets what is left. `done` runs once every connection is closed.
  void Shutdown(std::chrono::milliseconds grace, std::function<void()> done);

  UpstreamPool& upstream() { return pool_; }
  // For connections accepted from now on (tests shorten it).
  void set_preface_timeout(std::chrono::milliseconds timeout) { preface_timeout_ = timeout; }
  size_t connections() const { return connections_.size(); }

 private:
  void Accept();
  // Out of descriptors or memory: stop watching the listening socket for kAcceptPause.
  void PauseAccepting(int error);
  // What the relay does with calls to a path, remembered: kubelet calls a handful of paths over
  // and over, and deciding took two searches of the CRI method table per call (about 1,000
  // instructions) where remembering costs a hash of the path.
  struct Route {
    bool intercepted;
    int method_id;  // the observer's
  };
  Route RouteOf(const std::string& path);
  std::shared_ptr<ServerStream> NewStream(DownstreamConnection& down, int32_t id,
                                          const Headers& headers, bool end_stream);
  void Drop(Http2Connection* connection);
  size_t CallsInFlight() const;
  // After a flood of calls, gives the heap pages it left free back to the kernel (see .cc).
  void WatchForFlood(size_t in_flight);
  void ArmTrimCheck();
  void MaybeShutdownDone();

  EventLoop& loop_;
  UpstreamPool pool_;
  Interceptor* interceptor_;
  CallObserver* observer_;
  int listen_fd_ = -1;
  std::vector<std::unique_ptr<DownstreamConnection>> connections_;
  std::unordered_map<std::string, Route> routes_;
  static constexpr size_t kMaxRoutes = 256;
  uint64_t accepted_ = 0;
  static constexpr std::chrono::milliseconds kAcceptPause{100};
  std::chrono::milliseconds preface_timeout_ = DownstreamConnection::kPrefaceTimeout;
  bool shortage_logged_ = false;
  EventLoop::TimerId resume_timer_ = 0;  // pending while accepting is paused; 0: not paused
  bool shutting_down_ = false;
  // Calls in flight at once that count as a flood, how few make the relay quiet, and the quiet
  // period after which memory is trimmed.
  static constexpr size_t kFloodCalls = 256;
  static constexpr size_t kQuietCalls = 16;
  static constexpr std::chrono::milliseconds kTrimCheck{2000};
  size_t flood_peak_ = 0;              // the most calls in flight since the flood began
  bool busy_since_check_ = false;      // flood-sized load or a closed connection since the check
  EventLoop::TimerId trim_timer_ = 0;  // pending from a flood until the relay is quiet again
  std::function<void()> shutdown_done_;
};

}  // namespace shim::relay
