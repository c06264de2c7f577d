#include "relay/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace shim::relay {

namespace {
[[noreturn]] void Die(const char* what) {
  // Failures here are programming errors or exhausted kernel resources at start: crash loudly.
  std::fprintf(stderr, "event loop: %s: %s\n", what, std::strerror(errno));
  std::abort();
}
}  // namespace

EventLoop::EventLoop() {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) Die("epoll_create1");
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) Die("eventfd");
  Add(wake_fd_, EPOLLIN, [this](uint32_t) {
    uint64_t n;
    while (read(wake_fd_, &n, sizeof n) > 0) {
    }
    std::vector<std::function<void()>> tasks;
    {
      std::lock_guard lock(posted_mutex_);
      tasks.swap(posted_);
      if (stop_requested_) stopping_ = true;
    }
    for (auto& task : tasks) task();
  });
}

EventLoop::~EventLoop() {
  close(wake_fd_);
  close(epoll_fd_);
}

void EventLoop::Add(int fd, uint32_t events, FdCallback callback) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) Die("epoll_ctl add");
  fds_[fd] = std::make_shared<FdCallback>(std::move(callback));
}

void EventLoop::Modify(int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev) != 0) Die("epoll_ctl mod");
}

void EventLoop::Remove(int fd) {
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  fds_.erase(fd);
}

EventLoop::TimerId EventLoop::AddTimer(std::chrono::milliseconds delay,
                                       std::function<void()> callback) {
  TimerId id = next_timer_id_++;
  auto it = timers_.emplace(Now() + delay, Timer{id, std::move(callback)});
  timer_index_[id] = it;
  return id;
}

void EventLoop::Cancel(TimerId id) {
  auto it = timer_index_.find(id);
  if (it == timer_index_.end()) return;
  timers_.erase(it->second);
  timer_index_.erase(it);
}

void EventLoop::Defer(std::function<void()> task) {
  deferred_.push_back(std::move(task));
}

void EventLoop::Post(std::function<void()> task) {
  {
    std::lock_guard lock(posted_mutex_);
    posted_.push_back(std::move(task));
  }
  Wake();
}

void EventLoop::Stop() {
  {
    std::lock_guard lock(posted_mutex_);
    stop_requested_ = true;
  }
  Wake();
}

void EventLoop::Wake() {
  uint64_t one = 1;
  // A full counter already means "wake up": nothing is lost when this write fails.
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
}

int EventLoop::NextTimeoutMs(std::chrono::milliseconds cap) const {
  if (!deferred_.empty()) return 0;
  const bool capped = cap != kUntilEvent;
  if (timers_.empty()) return capped ? static_cast<int>(cap.count()) : -1;
  auto wait = std::chrono::ceil<std::chrono::milliseconds>(timers_.begin()->first - Now());
  if (wait.count() < 0) return 0;
  if (capped) wait = std::min(wait, cap);
  // epoll_wait takes an int of milliseconds: a timer days away is waited for in steps.
  return static_cast<int>(std::min<long long>(wait.count(), std::numeric_limits<int>::max()));
}

void EventLoop::RunTimers() {
  auto now = Now();
  while (!timers_.empty() && timers_.begin()->first <= now) {
    auto node = timers_.extract(timers_.begin());
    timer_index_.erase(node.mapped().id);
    node.mapped().callback();
  }
}

void EventLoop::RunDeferred() {
  // Deferred work may defer more (a flush that closes a connection): drain until quiet.
  while (!deferred_.empty()) {
    running_.swap(deferred_);
    for (auto& task : running_) task();
    running_.clear();
  }
}

void EventLoop::RunOnce(std::chrono::milliseconds max_wait) {
  constexpr int kMaxEvents = 64;
  epoll_event events[kMaxEvents];
  int n = epoll_wait(epoll_fd_, events, kMaxEvents, NextTimeoutMs(max_wait));
  if (n < 0 && errno != EINTR) Die("epoll_wait");
  for (int i = 0; i < n; ++i) {
    auto it = fds_.find(events[i].data.fd);
    if (it == fds_.end()) continue;  // removed by an earlier callback of this turn
    auto callback = it->second;      // keeps the callback alive if it removes itself
    (*callback)(events[i].events);
  }
  RunTimers();
  RunDeferred();
}

void EventLoop::Run() {
  while (!stopping_) RunOnce(kUntilEvent);
}

}  // namespace shim::relay
