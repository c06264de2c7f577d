#include "daemon/metrics.h"

#include <fmt/format.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "relay/grpc_wire.h"

namespace shim::daemon {

namespace {

// Every method of the CRI (runtime.v1 and runtime.v1alpha2); index 0 is "other".
constexpr std::string_view kMethods[] = {
    "other",
    "ImageService/ImageFsInfo",
    "ImageService/ImageStatus",
    "ImageService/ListImages",
    "ImageService/PullImage",
    "ImageService/RemoveImage",
    "ImageService/StreamImages",
    "RuntimeService/Attach",
    "RuntimeService/CheckpointContainer",
    "RuntimeService/CheckpointPod",
    "RuntimeService/ContainerStats",
    "RuntimeService/ContainerStatus",
    "RuntimeService/CreateContainer",
    "RuntimeService/Exec",
    "RuntimeService/ExecSync",
    "RuntimeService/GetContainerEvents",
    "RuntimeService/ListContainerStats",
    "RuntimeService/ListContainers",
    "RuntimeService/ListMetricDescriptors",
    "RuntimeService/ListPodSandbox",
    "RuntimeService/ListPodSandboxMetrics",
    "RuntimeService/ListPodSandboxStats",
    "RuntimeService/PodSandboxStats",
    "RuntimeService/PodSandboxStatus",
    "RuntimeService/PortForward",
    "RuntimeService/RemoveContainer",
    "RuntimeService/RemovePodSandbox",
    "RuntimeService/ReopenContainerLog",
    "RuntimeService/RestorePod",
    "RuntimeService/RunPodSandbox",
    "RuntimeService/RuntimeConfig",
    "RuntimeService/StartContainer",
    "RuntimeService/Status",
    "RuntimeService/StopContainer",
    "RuntimeService/StopPodSandbox",
    "RuntimeService/StreamContainerStats",
    "RuntimeService/StreamContainers",
    "RuntimeService/StreamPodSandboxMetrics",
    "RuntimeService/StreamPodSandboxStats",
    "RuntimeService/StreamPodSandboxes",
    "RuntimeService/UpdateContainerResources",
    "RuntimeService/UpdatePodSandboxResources",
    "RuntimeService/UpdateRuntimeConfig",
    "RuntimeService/Version",
};
constexpr size_t kMethodCount = std::size(kMethods);
constexpr std::string_view kVersionNames[] = {"v1", "v1alpha2"};

// The image methods that get a latency histogram, by method index.
constexpr std::string_view kImageMethods[] = {
    "ImageService/PullImage", "ImageService/ImageStatus", "ImageService/RemoveImage",
    "ImageService/ListImages", "RuntimeService/CreateContainer"};

size_t MethodIndex(std::string_view method) {
  for (size_t i = 1; i < kMethodCount; ++i) {
    if (kMethods[i] == method) return i;
  }
  return 0;
}

int ImageMethodIndex(size_t method) {
  for (size_t i = 0; i < std::size(kImageMethods); ++i) {
    if (kMethods[method] == kImageMethods[i]) return static_cast<int>(i);
  }
  return -1;
}

std::string CodeLabel(size_t code) {
  return code == 17 ? "RESET" : std::string(relay::GrpcCodeName(static_cast<int>(code)));
}

// Prometheus label values escape backslash, quote and newline.
std::string Escape(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

}  // namespace

Metrics::Metrics() : calls_(kVersions * kMethodCount), image_latency_(std::size(kImageMethods)) {}

int Metrics::MethodId(std::string_view path) {
  // "/runtime.v1.ImageService/PullImage" -> version 0, method "ImageService/PullImage"
  constexpr std::string_view kPrefix = "/runtime.";
  size_t version = 0;
  if (path.starts_with(kPrefix)) {
    path.remove_prefix(kPrefix.size());
    if (path.starts_with("v1alpha2.")) {
      version = 1;
      path.remove_prefix(9);
    } else if (path.starts_with("v1.")) {
      path.remove_prefix(3);
    } else {
      path = {};
    }
  } else {
    path = {};
  }
  return static_cast<int>(version * kMethodCount + MethodIndex(path));
}

void Metrics::OnCallFinished(int method_id, int grpc_code, std::chrono::nanoseconds duration) {
  size_t code = grpc_code >= 0 && grpc_code <= 16 ? static_cast<size_t>(grpc_code) : 17;
  size_t id = static_cast<size_t>(method_id) % calls_.size();
  calls_[id][code].fetch_add(1, std::memory_order_relaxed);
  int image = ImageMethodIndex(id % kMethodCount);
  if (image < 0) return;
  Histogram& h = image_latency_[static_cast<size_t>(image)];
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

void Metrics::OnFailover() { failovers_.fetch_add(1, std::memory_order_relaxed); }

void Metrics::AddCollector(std::function<void(std::string& out)> collector) {
  collectors_.push_back(std::move(collector));
}

std::string Metrics::Render() const {
  std::string out;
  out +=
      "# HELP image_cri_shim_calls_total CRI calls served, by API version, method and gRPC "
      "status.\n# TYPE image_cri_shim_calls_total counter\n";
  for (size_t v = 0; v < kVersions; ++v) {
    for (size_t m = 0; m < kMethodCount; ++m) {
      for (size_t c = 0; c < kCodes; ++c) {
        uint64_t n = calls_[v * kMethodCount + m][c].load(std::memory_order_relaxed);
        if (n == 0) continue;
        out += fmt::format(
            "image_cri_shim_calls_total{{version=\"{}\",method=\"{}\",code=\"{}\"}} {}\n",
            kVersionNames[v], kMethods[m], CodeLabel(c), n);
      }
    }
  }
  out +=
      "# HELP image_cri_shim_image_call_duration_seconds Time to answer the image calls the "
      "shim handles itself.\n# TYPE image_cri_shim_image_call_duration_seconds histogram\n";
  for (size_t i = 0; i < std::size(kImageMethods); ++i) {
    const Histogram& h = image_latency_[i];
    std::string method(kImageMethods[i]);
    for (size_t b = 0; b < kBuckets.size(); ++b) {
      out += fmt::format(
          "image_cri_shim_image_call_duration_seconds_bucket{{method=\"{}\",le=\"{}\"}} {}\n",
          method, kBuckets[b], h.buckets[b].load(std::memory_order_relaxed));
    }
    uint64_t count = h.count.load(std::memory_order_relaxed);
    out += fmt::format(
        "image_cri_shim_image_call_duration_seconds_bucket{{method=\"{}\",le=\"+Inf\"}} {}\n",
        method, count);
    out += fmt::format("image_cri_shim_image_call_duration_seconds_sum{{method=\"{}\"}} {:.6f}\n",
                       method, h.sum_ns.load(std::memory_order_relaxed) / 1e9);
    out += fmt::format("image_cri_shim_image_call_duration_seconds_count{{method=\"{}\"}} {}\n",
                       method, count);
  }
  out +=
      "# HELP image_cri_shim_pulls_total Pull attempts, by registry and result.\n"
      "# TYPE image_cri_shim_pulls_total counter\n";
  {
    std::lock_guard lock(pulls_mutex_);
    for (const auto& [key, n] : pulls_) {
      out += fmt::format("image_cri_shim_pulls_total{{registry=\"{}\",result=\"{}\"}} {}\n",
                         Escape(key.first), Escape(key.second), n);
    }
  }
  out += fmt::format(
      "# HELP image_cri_shim_failovers_total Times a pull moved on to the next registry.\n"
      "# TYPE image_cri_shim_failovers_total counter\nimage_cri_shim_failovers_total {}\n",
      failovers_.load(std::memory_order_relaxed));
  out += fmt::format(
      "# HELP image_cri_shim_runtime_reachable Whether the runtime's socket accepts "
      "connections.\n# TYPE image_cri_shim_runtime_reachable gauge\n"
      "image_cri_shim_runtime_reachable {}\n",
      runtime_reachable_.load() ? 1 : 0);
  out += fmt::format(
      "# HELP image_cri_shim_build_info The running build.\n"
      "# TYPE image_cri_shim_build_info gauge\n"
      "image_cri_shim_build_info{{version=\"{}\",commit=\"{}\"}} 1\n",
      SHIM_VERSION, SHIM_GIT_COMMIT);
  // Process figures, so memory growth shows without a separate exporter.
  long pages = 0, resident = 0;
  if (std::ifstream statm{"/proc/self/statm"}) statm >> pages >> resident;
  out += fmt::format(
      "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
      "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n",
      resident * sysconf(_SC_PAGESIZE));
  for (const auto& collector : collectors_) collector(out);
  return out;
}

}  // namespace shim::daemon
