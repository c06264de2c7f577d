// Which registries are down. Pull failures mark a registry down (the relay's loop thread); a
// prober thread re-checks only the registries marked down, with exponential backoff and
// jitter, and marks them up again when they answer; a successful pull marks one up at once.
// Healthy registries are never probed: a thousand nodes must not poll their registries.
//
// Thread-safe: every method may be called from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace shim::registry {

// Time, as a seam for tests.
class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
};

class SystemClock final : public Clock {
 public:
  TimePoint Now() const override { return std::chrono::steady_clock::now(); }
};

struct BackoffPolicy {
  std::chrono::milliseconds initial = std::chrono::seconds(2);  // first re-check after a failure
  std::chrono::milliseconds max = std::chrono::minutes(2);      // cap between re-checks
  double jitter = 0.2;  // each delay is scaled by a random factor in [1 - jitter, 1 + jitter]
};

class RegistryHealth {
 public:
  // Called (outside the lock) on every change between up and down, for logs and metrics.
  using Listener =
      std::function<void(const std::string& registry, bool up, const std::string& reason)>;

  explicit RegistryHealth(const Clock& clock, BackoffPolicy policy = {}, uint32_t seed = 0);

  void set_listener(Listener listener);

  // `registry` is a Config::Registry address. A pull through it failed for a reason that
  // concerns the registry (refused, timeout, TLS, 5xx).
  void MarkDown(const std::string& registry, const std::string& reason);
  // A pull through it succeeded, or a probe got an answer.
  void MarkUp(const std::string& registry);
  bool IsDown(const std::string& registry) const;
  std::optional<std::string> DownReason(const std::string& registry) const;

  // A probe of a down registry failed again: the next one waits longer.
  void ProbeFailed(const std::string& registry, const std::string& reason);
  // Down registries whose next probe is due now.
  std::vector<std::string> DueForProbe() const;
  // When the next probe is due (nullopt: nothing is down).
  std::optional<Clock::TimePoint> NextProbeAt() const;
  // Forgets registries that are no longer configured.
  void Retain(const std::vector<std::string>& registries);

  // Credentials rejected: true the first time for a registry since it last succeeded, so the
  // rejection is logged once rather than on every pull.
  bool NoteCredentialsRejected(const std::string& registry);

  // Blocks until something changes or `deadline` passes (the prober's wait).
  void WaitForChange(Clock::TimePoint deadline);
  void Wake();

  // Every registry's state, for metrics: address -> up.
  std::map<std::string, bool> Snapshot() const;

 private:
  struct State {
    bool down = false;
    std::string reason;
    std::chrono::milliseconds backoff{0};
    Clock::TimePoint next_probe{};
    bool credentials_rejected = false;
  };
  std::chrono::milliseconds Jittered(std::chrono::milliseconds d);  // REQUIRES: mutex_ held

  const Clock& clock_;
  BackoffPolicy policy_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  uint64_t generation_ = 0;              // GUARDED_BY(mutex_)
  std::map<std::string, State> states_;  // GUARDED_BY(mutex_)
  std::mt19937 random_;                  // GUARDED_BY(mutex_)
  Listener listener_;                    // set before use
};

}  // namespace shim::registry
