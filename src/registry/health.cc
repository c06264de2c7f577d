#include "registry/health.h"

namespace shim::registry {

RegistryHealth::RegistryHealth(const Clock& clock, BackoffPolicy policy, uint32_t seed)
    : clock_(clock), policy_(policy), random_(seed == 0 ? std::random_device{}() : seed) {}

void RegistryHealth::set_listener(Listener listener) {
  listener_ = std::move(listener);
}

std::chrono::milliseconds RegistryHealth::Jittered(std::chrono::milliseconds d) {
  std::uniform_real_distribution<double> factor(1.0 - policy_.jitter, 1.0 + policy_.jitter);
  return std::chrono::milliseconds(static_cast<int64_t>(d.count() * factor(random_)));
}

void RegistryHealth::MarkDown(const std::string& registry, const std::string& reason) {
  bool changed;
  {
    std::lock_guard lock(mutex_);
    State& s = states_[registry];
    changed = !s.down;
    s.reason = reason;
    if (changed) {
      s.down = true;
      s.backoff = policy_.initial;
      s.next_probe = clock_.Now() + Jittered(s.backoff);
      ++generation_;
    }
  }
  if (changed) {
    changed_.notify_all();
    if (listener_) listener_(registry, false, reason);
  }
}

void RegistryHealth::MarkUp(const std::string& registry) {
  bool changed;
  {
    std::lock_guard lock(mutex_);
    auto it = states_.find(registry);
    if (it == states_.end()) return;
    changed = it->second.down;
    it->second.down = false;
    it->second.reason.clear();
    it->second.credentials_rejected = false;
    ++generation_;
  }
  if (changed) {
    changed_.notify_all();
    if (listener_) listener_(registry, true, "");
  }
}

bool RegistryHealth::IsDown(const std::string& registry) const {
  std::lock_guard lock(mutex_);
  auto it = states_.find(registry);
  return it != states_.end() && it->second.down;
}

std::optional<std::string> RegistryHealth::DownReason(const std::string& registry) const {
  std::lock_guard lock(mutex_);
  auto it = states_.find(registry);
  if (it == states_.end() || !it->second.down) return std::nullopt;
  return it->second.reason;
}

void RegistryHealth::ProbeFailed(const std::string& registry, const std::string& reason) {
  std::lock_guard lock(mutex_);
  auto it = states_.find(registry);
  if (it == states_.end() || !it->second.down) return;
  State& s = it->second;
  s.reason = reason;
  s.backoff = std::min(policy_.max, s.backoff * 2);
  s.next_probe = clock_.Now() + Jittered(s.backoff);
}

std::vector<std::string> RegistryHealth::DueForProbe() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> due;
  auto now = clock_.Now();
  for (const auto& [registry, s] : states_) {
    if (s.down && s.next_probe <= now) due.push_back(registry);
  }
  return due;
}

std::optional<Clock::TimePoint> RegistryHealth::NextProbeAt() const {
  std::lock_guard lock(mutex_);
  std::optional<Clock::TimePoint> next;
  for (const auto& [registry, s] : states_) {
    if (s.down && (!next || s.next_probe < *next)) next = s.next_probe;
  }
  return next;
}

void RegistryHealth::Retain(const std::vector<std::string>& registries) {
  std::lock_guard lock(mutex_);
  for (auto it = states_.begin(); it != states_.end();) {
    bool keep = std::find(registries.begin(), registries.end(), it->first) != registries.end();
    it = keep ? std::next(it) : states_.erase(it);
  }
  ++generation_;
  changed_.notify_all();
}

bool RegistryHealth::NoteCredentialsRejected(const std::string& registry) {
  std::lock_guard lock(mutex_);
  State& s = states_[registry];
  bool first = !s.credentials_rejected;
  s.credentials_rejected = true;
  return first;
}

void RegistryHealth::WaitForChange(Clock::TimePoint deadline) {
  std::unique_lock lock(mutex_);
  uint64_t seen = generation_;
  // The wait uses the real clock: a fake clock in tests drives DueForProbe, not this.
  changed_.wait_until(lock, deadline, [&] { return generation_ != seen; });
}

void RegistryHealth::Wake() {
  {
    std::lock_guard lock(mutex_);
    ++generation_;
  }
  changed_.notify_all();
}

std::map<std::string, bool> RegistryHealth::Snapshot() const {
  std::lock_guard lock(mutex_);
  std::map<std::string, bool> up;
  for (const auto& [registry, s] : states_) up[registry] = !s.down;
  return up;
}

}  // namespace shim::registry
