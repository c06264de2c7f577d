#include "relay/relay_server.h"

#include <malloc.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "relay/relayed_call.h"

namespace shim::relay {

RelayServer::RelayServer(EventLoop& loop, std::string runtime_socket, Interceptor* interceptor,
                         CallObserver* observer)
    : loop_(loop),
      pool_(loop, std::move(runtime_socket)),
      interceptor_(interceptor),
      observer_(observer) {}

RelayServer::~RelayServer() {
  if (resume_timer_ != 0) loop_.Cancel(resume_timer_);
  if (trim_timer_ != 0) loop_.Cancel(trim_timer_);
  if (listen_fd_ >= 0) loop_.Remove(listen_fd_);
}

void RelayServer::Serve(int listen_fd) {
  listen_fd_ = listen_fd;
  loop_.Add(listen_fd_, EPOLLIN, [this](uint32_t) { Accept(); });
}

void RelayServer::Accept() {
  // A burst of connections is taken in one go; the rest wait for the next turn.
  for (int i = 0; i < 16; ++i) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        PauseAccepting(errno);
      } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
        spdlog::warn("accept failed error=\"{}\"", std::strerror(errno));
      }
      return;
    }
    if (shortage_logged_) {
      shortage_logged_ = false;
      spdlog::info("accepting connections again connections={}", connections_.size() + 1);
    }
    auto connection = std::make_unique<DownstreamConnection>(
        loop_, fd, "client#" + std::to_string(++accepted_),
        [this](DownstreamConnection& down, int32_t id, const Headers& headers, bool end_stream) {
          return NewStream(down, id, headers, end_stream);
        },
        preface_timeout_);
    connection->set_on_closed([this](Http2Connection* c) { Drop(c); });
    connections_.push_back(std::move(connection));
  }
}

void RelayServer::PauseAccepting(int error) {
  // The pending connection stays in the kernel's backlog, so the listening socket stays
  // readable: watching it now would spin the loop. Connections already accepted keep being
  // served; accepting resumes after a pause, when descriptors may have been freed.
  if (resume_timer_ != 0) return;  // already paused
  loop_.Modify(listen_fd_, 0);
  // Logged once per shortage, not once per pause: a shortage can last.
  if (!shortage_logged_) {
    shortage_logged_ = true;
    spdlog::warn(
        "cannot accept connections, retrying every {} ms until resources are freed "
        "error=\"{}\" connections={}",
        kAcceptPause.count(), std::strerror(error), connections_.size());
  }
  resume_timer_ = loop_.AddTimer(kAcceptPause, [this] {
    resume_timer_ = 0;
    if (!shutting_down_ && listen_fd_ >= 0) loop_.Modify(listen_fd_, EPOLLIN);
  });
}

std::shared_ptr<ServerStream> RelayServer::NewStream(DownstreamConnection& down, int32_t id,
                                                     const Headers& headers, bool end_stream) {
  WatchForFlood(CallsInFlight() + 1);
  const std::string& path = *FindHeader(headers, ":path");
  Route route = RouteOf(path);
  if (route.intercepted) {
    auto call = std::make_shared<InterceptedCall>(loop_, down, id, headers, pool_, *interceptor_,
                                                  observer_, route.method_id);
    if (end_stream) call->OnRequestEnd();
    return call;
  }
  spdlog::debug("relay path={}", path);
  return RelayedCall::Start(down, id, headers, end_stream, pool_, observer_, route.method_id);
}

RelayServer::Route RelayServer::RouteOf(const std::string& path) {
  auto it = routes_.find(path);
  if (it != routes_.end()) return it->second;
  Route route{interceptor_ != nullptr && interceptor_->Intercepts(path),
              observer_ != nullptr ? observer_->MethodId(path) : 0};
  // Paths come from clients: the memory is bounded, and starts over when full.
  if (routes_.size() >= kMaxRoutes) routes_.clear();
  routes_.emplace(path, route);
  return route;
}

size_t RelayServer::CallsInFlight() const {
  size_t calls = 0;
  for (const auto& c : connections_) calls += c->active_streams();
  return calls;
}

// A flood of concurrent calls (thousands at once, where kubelet keeps a handful) grows the heap
// by megabytes of stream state and connection buffers. Freed, that memory stays with the
// allocator: glibc returns only the top of the heap to the kernel, and allocations made during
// the flood that live on pin the rest, so the process would keep its flood-time size for good
// (measured: 11.7 -> 17.5 MiB after five floods of 2,000 calls, `make bench`). Once the relay
// has been quiet for a whole kTrimCheck after a flood (no flood-sized load, no connection
// closed, few calls in flight), malloc_trim hands the free pages back. The watch costs a sum
// over the connections per call and a timer every kTrimCheck while a flood lasts; a node whose
// kubelet keeps a handful of calls in flight never arms it.
void RelayServer::WatchForFlood(size_t in_flight) {
  if (in_flight < kFloodCalls) return;
  flood_peak_ = std::max(flood_peak_, in_flight);
  busy_since_check_ = true;
  if (trim_timer_ == 0) ArmTrimCheck();
}

void RelayServer::ArmTrimCheck() {
  trim_timer_ = loop_.AddTimer(kTrimCheck, [this] {
    trim_timer_ = 0;
    if (busy_since_check_ || CallsInFlight() >= kQuietCalls) {
      busy_since_check_ = false;
      ArmTrimCheck();
      return;
    }
    spdlog::debug("flood over, returning free heap memory to the kernel peak_calls_in_flight={}",
                  flood_peak_);
    flood_peak_ = 0;
    malloc_trim(0);
  });
}

void RelayServer::Drop(Http2Connection* connection) {
  auto it = std::find_if(connections_.begin(), connections_.end(),
                         [&](const auto& c) { return c.get() == connection; });
  if (it == connections_.end()) return;
  auto doomed = std::make_shared<std::unique_ptr<DownstreamConnection>>(std::move(*it));
  connections_.erase(it);
  loop_.Defer([doomed] {});
  // A connection's buffers come free with it: after a flood, wait for a quiet period from here.
  if (trim_timer_ != 0) busy_since_check_ = true;
  MaybeShutdownDone();
}

void RelayServer::Shutdown(std::chrono::milliseconds grace, std::function<void()> done) {
  shutting_down_ = true;
  shutdown_done_ = std::move(done);
  if (listen_fd_ >= 0) {
    loop_.Remove(listen_fd_);
    listen_fd_ = -1;
  }
  for (auto& c : connections_) c->Shutdown();
  loop_.AddTimer(grace, [this] {
    for (auto& c : connections_) c->Close("grace period over");
  });
  MaybeShutdownDone();
}

void RelayServer::MaybeShutdownDone() {
  if (!shutting_down_ || !connections_.empty() || !shutdown_done_) return;
  auto done = std::move(shutdown_done_);
  shutdown_done_ = nullptr;
  pool_.CloseAll();
  loop_.Defer(std::move(done));
}

}  // namespace shim::relay
