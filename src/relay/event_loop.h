// A single-threaded epoll event loop: file descriptor readiness, one-shot timers, tasks posted
// from other threads, and work deferred to the end of the current turn.
//
// Thread safety: everything except Post() and Stop() must be called on the loop thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace shim::relay {

class EventLoop {
 public:
  using Clock = std::chrono::steady_clock;
  using FdCallback = std::function<void(uint32_t events)>;  // EPOLLIN / EPOLLOUT / EPOLLERR ...
  using TimerId = uint64_t;

  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Registers `fd` for `events`; the callback runs on the loop thread. The fd stays owned by
  // the caller, who must Remove() it before closing it.
  void Add(int fd, uint32_t events, FdCallback callback);
  void Modify(int fd, uint32_t events);
  void Remove(int fd);

  // Runs `callback` once, `delay` from now. Cancel() of a fired or unknown timer does nothing.
  TimerId AddTimer(std::chrono::milliseconds delay, std::function<void()> callback);
  void Cancel(TimerId id);

  // Runs `task` at the end of the current turn, after every ready fd was served: the place for
  // batched output and for destroying objects that may still be on the call stack.
  void Defer(std::function<void()> task);

  // Thread-safe: runs `task` on the loop thread soon.
  void Post(std::function<void()> task);

  // Runs turns until Stop(). Thread-safe Stop() may come from any thread. An idle loop sleeps
  // until its next timer or event: Stop() and Post() wake it, nothing polls.
  void Run();
  void Stop();
  // One turn: waits at most `max_wait` for events (kUntilEvent: until a timer or an event).
  void RunOnce(std::chrono::milliseconds max_wait);
  static constexpr std::chrono::milliseconds kUntilEvent{-1};

  Clock::time_point Now() const { return Clock::now(); }

 private:
  void Wake();
  void RunTimers();
  void RunDeferred();
  int NextTimeoutMs(std::chrono::milliseconds cap) const;

  int epoll_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: Post() and Stop() from other threads
  bool stopping_ = false;
  std::unordered_map<int, std::shared_ptr<FdCallback>> fds_;
  struct Timer {
    TimerId id;
    std::function<void()> callback;
  };
  std::multimap<Clock::time_point, Timer> timers_;
  std::unordered_map<TimerId, std::multimap<Clock::time_point, Timer>::iterator> timer_index_;
  TimerId next_timer_id_ = 1;
  std::vector<std::function<void()>> deferred_;
  // The batch being run: swapped with deferred_, so both keep their room from turn to turn
  // (every call defers a few flushes; a fresh vector would grow from nothing each time).
  std::vector<std::function<void()>> running_;

  std::mutex posted_mutex_;
  std::vector<std::function<void()>> posted_;  // GUARDED_BY(posted_mutex_)
  bool stop_requested_ = false;                // GUARDED_BY(posted_mutex_)
};

}  // namespace shim::relay
