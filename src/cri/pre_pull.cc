#include "cri/pre_pull.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>

#include "util/log.h"

namespace shim::cri {

PrePuller::PrePuller(ImageService& images, relay::EventLoop& loop, relay::UpstreamPool& pool,
                     ImageService::ConfigSource config, Timing timing)
    : images_(images), loop_(loop), pool_(pool), config_(std::move(config)), timing_(timing) {}

PrePuller::~PrePuller() {
  *alive_ = false;
  for (auto& [image, entry] : entries_) {
    if (entry.timer != 0) loop_.Cancel(entry.timer);
  }
}

std::string_view PrePuller::StateName(State state) {
  switch (state) {
    case State::kPending:
      return "pending";
    case State::kPresent:
      return "present";
    case State::kFailed:
      return "failed";
  }
  return "pending";
}

void PrePuller::Start() {
  CheckList();
}

void PrePuller::OnConfigChanged() {
  CheckList();
}

std::vector<PrePuller::Status> PrePuller::Snapshot() const {
  std::lock_guard lock(mutex_);
  std::vector<Status> out;
  for (const auto& [image, entry] : entries_) out.push_back({image, entry.state, entry.reason});
  return out;
}

void PrePuller::CheckList() {
  config::ConfigPtr config = config_();
  if (config != seen_) {  // a reload: the list may have changed
    seen_ = config;
    if (config->pre_pull != listed_) Sync(config->pre_pull);
    // New credentials, registries or rules may be what a failed image waited for: no backoff
    // stands between a fixed configuration and the image.
    RetryFailedNow();
  }
}

void PrePuller::Sync(const std::vector<std::string>& images) {
  listed_ = images;
  ++generation_;
  std::vector<std::string> added;
  {
    std::lock_guard lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (std::find(images.begin(), images.end(), it->first) != images.end()) {
        ++it;
        continue;
      }
      if (it->second.timer != 0) loop_.Cancel(it->second.timer);
      spdlog::info("prePull {}: no longer listed", it->first);
      it = entries_.erase(it);
    }
    for (const auto& image : images) {
      auto [it, inserted] = entries_.try_emplace(image);
      if (!inserted) continue;
      it->second.generation = generation_;
      added.push_back(image);
    }
  }
  for (const auto& image : added) {
    spdlog::info("prePull {}: pending", image);
    Try(image);
  }
}

void PrePuller::RetryFailedNow() {
  std::vector<std::string> failed;
  {
    std::lock_guard lock(mutex_);
    for (auto& [image, entry] : entries_) {
      if (entry.state != State::kFailed || entry.in_flight) continue;
      if (entry.timer != 0) loop_.Cancel(entry.timer);
      entry.timer = 0;
      entry.failures = 0;
      failed.push_back(image);
    }
  }
  if (!failed.empty()) spdlog::info("prePull: the configuration changed, trying the failed again");
  for (const auto& image : failed) Try(image);
}

void PrePuller::Try(const std::string& image) {
  uint64_t generation;
  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(image);
    if (it == entries_.end() || it->second.in_flight) return;
    it->second.in_flight = true;
    it->second.timer = 0;
    generation = it->second.generation;
  }
  images_.EnsurePresent(
      loop_, pool_, image,
      [this, image, generation, alive = std::weak_ptr(alive_)](const OwnPullResult& result) {
        if (alive.lock()) Settled(image, generation, result);
      });
}

void PrePuller::Settled(const std::string& image, uint64_t generation,
                        const OwnPullResult& result) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(image);
  if (it == entries_.end() || it->second.generation != generation) return;  // unlisted since
  Entry& entry = it->second;
  entry.in_flight = false;
  State before = entry.state;
  if (result.state == OwnPullResult::State::kFailed) {
    entry.state = State::kFailed;
    entry.reason = result.reason;
    if (result.reason == "refused") {
      // The policy says the same until the configuration changes (RetryFailedNow).
      spdlog::warn("prePull {}: refused, tried again when the configuration changes error={}",
                   image, log::Quoted(result.message));
      return;
    }
    ++entry.failures;
    auto delay = RetryDelay(entry.failures, timing_);
    spdlog::warn("prePull {}: failed ({}), retry in {}s error={}", image, result.reason,
                 std::chrono::duration_cast<std::chrono::seconds>(delay).count(),
                 log::Quoted(result.message));
    return Schedule(image, entry, delay);
  }
  entry.state = State::kPresent;
  entry.reason.clear();
  entry.failures = 0;
  if (result.state == OwnPullResult::State::kPulled) {
    spdlog::info("prePull {}: pulled", image);
  } else if (before != State::kPresent) {
    spdlog::info("prePull {}: present already", image);
  }
  Schedule(image, entry, timing_.recheck_present);
}

void PrePuller::Schedule(const std::string& image, Entry& entry, std::chrono::milliseconds delay) {
  entry.timer = loop_.AddTimer(delay, [this, image, alive = std::weak_ptr(alive_)] {
    if (alive.lock()) Try(image);
  });
}

std::chrono::milliseconds PrePuller::RetryDelay(int failures, const Timing& timing) {
  // Doubling from first_retry up to longest_retry, with +-20% jitter so that a thousand nodes
  // that failed together do not retry together.
  auto delay = timing.first_retry;
  for (int i = 1; i < failures && delay < timing.longest_retry; ++i) delay *= 2;
  delay = std::min(delay, timing.longest_retry);
  static thread_local std::minstd_rand random(std::random_device{}());
  std::uniform_real_distribution<double> jitter(0.8, 1.2);
  return std::chrono::milliseconds(static_cast<long long>(delay.count() * jitter(random)));
}

}  // namespace shim::cri
