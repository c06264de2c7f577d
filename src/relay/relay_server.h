// The relay as a whole: accepts kubelet connections on a listening unix socket and serves every
// call on them, intercepted or relayed, through one UpstreamPool.
//
// Loop thread only.
#pragma once

#include <functional>
#include <memory>
#include <string>
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
  std::shared_ptr<ServerStream> NewStream(DownstreamConnection& down, int32_t id, Headers headers,
                                          bool end_stream);
  void Drop(Http2Connection* connection);
  void MaybeShutdownDone();

  EventLoop& loop_;
  UpstreamPool pool_;
  Interceptor* interceptor_;
  CallObserver* observer_;
  int listen_fd_ = -1;
  std::vector<std::unique_ptr<DownstreamConnection>> connections_;
  uint64_t accepted_ = 0;
  static constexpr std::chrono::milliseconds kAcceptPause{100};
  std::chrono::milliseconds preface_timeout_ = DownstreamConnection::kPrefaceTimeout;
  bool shortage_logged_ = false;
  EventLoop::TimerId resume_timer_ = 0;  // pending while accepting is paused; 0: not paused
  bool shutting_down_ = false;
  std::function<void()> shutdown_done_;
};

}  // namespace shim::relay
