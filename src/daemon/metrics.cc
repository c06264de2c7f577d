#include "daemon/metrics.h"

#include <fmt/format.h>
#include <unistd.h>

#include <fstream>
#include <optional>

#include "cri/method.h"
#include "daemon/prometheus_text.h"
#include "relay/grpc_wire.h"

namespace shim::daemon {

namespace {

// Method ids are version * kMethodSlots + slot, where slot 0 is "other" (no CRI method, or no
// CRI path at all) and slot i + 1 is cri::CriMethods()[i].
const size_t kMethodSlots = cri::CriMethods().size() + 1;

std::string_view SlotName(size_t slot) {
  return slot == 0 ? "other" : cri::CriMethods()[slot - 1].name;
}

// The latency histogram of the intercepted method in `slot`, if it has one.
std::optional<cri::ImageMethod> HistogramMethod(size_t slot) {
  return slot == 0 ? std::nullopt : cri::CriMethods()[slot - 1].intercepted;
}

std::string CodeLabel(size_t code) {
  return code == 17 ? "RESET" : std::string(relay::GrpcCodeName(static_cast<int>(code)));
}

}  // namespace

Metrics::Metrics()
    : calls_(cri::kApiVersionCount * kMethodSlots), image_latency_(cri::kImageMethodCount) {}

int Metrics::MethodId(std::string_view path) {
  std::optional<cri::CriPath> classified = cri::ClassifyPath(path);
  // A path outside the CRI counts as "other" under v1, the version every runtime serves.
  if (!classified) return 0;
  size_t slot = classified->method ? *classified->method + 1 : 0;
  return static_cast<int>(static_cast<size_t>(classified->version) * kMethodSlots + slot);
}

void Metrics::OnCallFinished(int method_id, int grpc_code, std::chrono::nanoseconds duration) {
  size_t code = grpc_code >= 0 && grpc_code <= 16 ? static_cast<size_t>(grpc_code) : 17;
  size_t id = static_cast<size_t>(method_id) % calls_.size();
  calls_[id][code].fetch_add(1, std::memory_order_relaxed);
  std::optional<cri::ImageMethod> intercepted = HistogramMethod(id % kMethodSlots);
  if (!intercepted) return;
  Histogram& h = image_latency_[static_cast<size_t>(*intercepted)];
  double seconds = std::chrono::duration<double>(duration).count();
  for (size_t b = 0; b < kBuckets.size(); ++b) {
    if (seconds <= kBuckets[b]) h.buckets[b].fetch_add(1, std::memory_order_relaxed);
  }
  h.count.fetch_add(1, std::memory_order_relaxed);
  h.sum_ns.fetch_add(static_cast<uint64_t>(duration.count()), std::memory_order_relaxed);
}

void Metrics::OnPullResult(const std::string& registry, std::string_view result) {
  std::lock_guard lock(pulls_mutex_);
  ++pulls_[{registry, std::string(result)}];
}

void Metrics::OnFailover() {
  failovers_.fetch_add(1, std::memory_order_relaxed);
}

void Metrics::OnPullRefused(const std::string& rule) {
  std::lock_guard lock(pulls_mutex_);
  ++refusals_[rule];
}

void Metrics::AddCollector(std::function<void(std::string& out)> collector) {
  collectors_.push_back(std::move(collector));
}

std::string Metrics::Render() const {
  std::string out;
  PrometheusText text(out);
  text.Family("image_cri_shim_calls_total", "counter",
              "CRI calls served, by API version, method and gRPC status.");
  for (size_t v = 0; v < cri::kApiVersionCount; ++v) {
    std::string_view version = cri::ApiVersionName(static_cast<cri::ApiVersion>(v));
    for (size_t m = 0; m < kMethodSlots; ++m) {
      for (size_t c = 0; c < kCodes; ++c) {
        uint64_t n = calls_[v * kMethodSlots + m][c].load(std::memory_order_relaxed);
        if (n == 0) continue;
        text.Sample("image_cri_shim_calls_total",
                    {{"version", version}, {"method", SlotName(m)}, {"code", CodeLabel(c)}}, n);
      }
    }
  }
  text.Family("image_cri_shim_image_call_duration_seconds", "histogram",
              "Time to answer the image calls the shim handles itself.");
  for (size_t i = 0; i < cri::kImageMethodCount; ++i) {
    const Histogram& h = image_latency_[i];
    std::string_view method = cri::MethodName(static_cast<cri::ImageMethod>(i));
    for (size_t b = 0; b < kBuckets.size(); ++b) {
      text.Sample("image_cri_shim_image_call_duration_seconds_bucket",
                  {{"method", method}, {"le", fmt::format("{}", kBuckets[b])}},
                  h.buckets[b].load(std::memory_order_relaxed));
    }
    uint64_t count = h.count.load(std::memory_order_relaxed);
    text.Sample("image_cri_shim_image_call_duration_seconds_bucket",
                {{"method", method}, {"le", "+Inf"}}, count);
    text.Sample("image_cri_shim_image_call_duration_seconds_sum", {{"method", method}},
                h.sum_ns.load(std::memory_order_relaxed) / 1e9);
    text.Sample("image_cri_shim_image_call_duration_seconds_count", {{"method", method}}, count);
  }
  text.Family("image_cri_shim_pulls_total", "counter", "Pull attempts, by registry and result.");
  {
    std::lock_guard lock(pulls_mutex_);
    for (const auto& [key, n] : pulls_) {
      text.Sample("image_cri_shim_pulls_total", {{"registry", key.first}, {"result", key.second}},
                  n);
    }
  }
  text.Family("image_cri_shim_pulls_refused_total", "counter",
              "Pulls the node's policy refused, by rule (deny:<prefix>, or allow when no allow "
              "entry matched).");
  {
    std::lock_guard lock(pulls_mutex_);
    for (const auto& [rule, n] : refusals_) {
      text.Sample("image_cri_shim_pulls_refused_total", {{"rule", rule}}, n);
    }
  }
  text.Family("image_cri_shim_failovers_total", "counter",
              "Times a pull moved on to the next registry.");
  text.Sample("image_cri_shim_failovers_total", {}, failovers_.load(std::memory_order_relaxed));
  text.Family("image_cri_shim_runtime_reachable", "gauge",
              "Whether the runtime's socket accepts connections.");
  text.Sample("image_cri_shim_runtime_reachable", {}, runtime_reachable_.load() ? 1 : 0);
  text.Family("image_cri_shim_build_info", "gauge", "The running build.");
  text.Sample("image_cri_shim_build_info", {{"version", SHIM_VERSION}, {"commit", SHIM_GIT_COMMIT}},
              1);
  // Process figures, so memory growth shows without a separate exporter.
  long pages = 0, resident = 0;
  if (std::ifstream statm{"/proc/self/statm"}) statm >> pages >> resident;
  text.Family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  text.Sample("process_resident_memory_bytes", {}, resident * sysconf(_SC_PAGESIZE));
  for (const auto& collector : collectors_) collector(out);
  return out;
}

}  // namespace shim::daemon
