// The shim's metrics, kept as atomic counters that the relay's loop thread bumps without locks
// and that the metrics endpoint's thread renders in the Prometheus text format.
//
// Label values are bounded: methods come from cri/method.h's list of CRI methods (anything else
// is "other"), registries and policy rules from the configuration, codes from gRPC's list. No
// label carries a credential, and only the images the configuration lists (prePull) name one.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "cri/pull_observer.h"
#include "relay/call_observer.h"

namespace shim::daemon {

class Metrics final : public relay::CallObserver, public cri::PullObserver {
 public:
  Metrics();

  // relay::CallObserver (loop thread)
  int MethodId(std::string_view path) override;
  void OnCallFinished(int method_id, int grpc_code, std::chrono::nanoseconds duration) override;

  // Pulls (loop thread): one result per registry tried; a failover each time a pull moves on.
  void OnPullResult(const std::string& registry, std::string_view result) override;
  void OnFailover() override;
  void OnPullRefused(const std::string& rule) override;

  void SetRuntimeReachable(bool reachable) { runtime_reachable_ = reachable; }

  // Extra families rendered after the built-in ones (registry health, reloads, sync state),
  // each appending complete families through a PrometheusText on `out`, which escapes label
  // values. Set before the endpoint starts.
  void AddCollector(std::function<void(std::string& out)> collector);

  // The whole exposition. Any thread.
  std::string Render() const;

 private:
  static constexpr size_t kCodes = 18;  // 0..16 and "reset"
  static constexpr std::array<double, 12> kBuckets = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5,
                                                      1,     5,     10,   30,   60,  300};
  struct Histogram {
    std::array<std::atomic<uint64_t>, kBuckets.size()> buckets{};
    std::atomic<uint64_t> count{0};
    std::atomic<uint64_t> sum_ns{0};
  };

  std::vector<std::array<std::atomic<uint64_t>, kCodes>> calls_;  // [MethodId]
  std::vector<Histogram> image_latency_;                          // [cri::ImageMethod]
  std::atomic<uint64_t> failovers_{0};
  std::atomic<bool> runtime_reachable_{false};

  mutable std::mutex pulls_mutex_;
  std::map<std::pair<std::string, std::string>, uint64_t> pulls_;  // GUARDED_BY(pulls_mutex_)
  std::map<std::string, uint64_t> refusals_;                       // GUARDED_BY(pulls_mutex_)

  std::vector<std::function<void(std::string&)>> collectors_;
};

}  // namespace shim::daemon
