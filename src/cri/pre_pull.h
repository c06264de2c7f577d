// `prePull`: the images the configuration lists, made present on the node when the shim starts
// and whenever the list changes (file or ConfigMap), through the normal pull path
// (ImageService::EnsurePresent: policy, rewrite, credentials, order, failover, naming). Images
// already present are skipped; a failure is retried with backoff; present images are checked
// again now and then, so one removed by hand or by garbage collection comes back; a change of the
// configuration retries failed images at once (one the policy refused waits for that). Nothing
// here delays serving: it all runs as timers and callbacks on the loop, and nothing wakes it while
// it has nothing to do. Every state change is logged, and the states are kept for the metrics.
//
// Loop thread, except Snapshot (any thread).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config/config.h"
#include "cri/image_service.h"
#include "relay/event_loop.h"
#include "relay/upstream.h"

namespace shim::cri {

class PrePuller {
 public:
  enum class State { kPending, kPresent, kFailed };
  struct Status {
    std::string image;
    State state = State::kPending;
    std::string reason;  // kFailed: OwnPullResult::reason
  };
  struct Timing {
    std::chrono::milliseconds first_retry = std::chrono::seconds(5);
    std::chrono::milliseconds longest_retry = std::chrono::minutes(5);
    std::chrono::milliseconds recheck_present = std::chrono::minutes(10);
  };

  // All must outlive the PrePuller.
  PrePuller(ImageService& images, relay::EventLoop& loop, relay::UpstreamPool& pool,
            ImageService::ConfigSource config, Timing timing);
  PrePuller(ImageService& images, relay::EventLoop& loop, relay::UpstreamPool& pool,
            ImageService::ConfigSource config)
      : PrePuller(images, loop, pool, std::move(config), Timing()) {}
  ~PrePuller();
  PrePuller(const PrePuller&) = delete;
  PrePuller& operator=(const PrePuller&) = delete;

  // Reads the list now.
  void Start();
  // A new configuration was published: the list, and what failed images wait for, may have
  // changed. Called on the loop.
  void OnConfigChanged();
  // The images listed now, each with its state. Any thread.
  std::vector<Status> Snapshot() const;

  static std::string_view StateName(State state);
  // The wait before the next try after `failures` failures in a row.
  static std::chrono::milliseconds RetryDelay(int failures, const Timing& timing);

 private:
  struct Entry {
    State state = State::kPending;
    std::string reason;
    int failures = 0;  // in a row
    bool in_flight = false;
    relay::EventLoop::TimerId timer = 0;
    uint64_t generation = 0;  // of the listing that made it: a stale answer is ignored
  };

  void CheckList();
  void Sync(const std::vector<std::string>& images);
  void RetryFailedNow();
  void Try(const std::string& image);
  void Settled(const std::string& image, uint64_t generation, const OwnPullResult& result);
  void Schedule(const std::string& image, Entry& entry, std::chrono::milliseconds delay);

  ImageService& images_;
  relay::EventLoop& loop_;
  relay::UpstreamPool& pool_;
  ImageService::ConfigSource config_;
  Timing timing_;
  config::ConfigPtr seen_;  // the snapshot the list was last read from
  std::vector<std::string> listed_;
  uint64_t generation_ = 0;
  // Callbacks hold a weak reference: after destruction they do nothing.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);

  mutable std::mutex mutex_;  // guards entries_ against Snapshot
  std::map<std::string, Entry> entries_;
};

}  // namespace shim::cri
