#include "cri/method.h"

#include <algorithm>
#include <cstdlib>
#include <iterator>

namespace shim::cri {

namespace {

constexpr CriMethod kCriMethods[] = {
    {"ImageService/ImageFsInfo", std::nullopt},
    {"ImageService/ImageStatus", ImageMethod::kImageStatus},
    {"ImageService/ListImages", ImageMethod::kListImages},
    {"ImageService/PullImage", ImageMethod::kPullImage},
    {"ImageService/RemoveImage", ImageMethod::kRemoveImage},
    {"ImageService/StreamImages", std::nullopt},
    {"RuntimeService/Attach", std::nullopt},
    {"RuntimeService/CheckpointContainer", std::nullopt},
    {"RuntimeService/CheckpointPod", std::nullopt},
    {"RuntimeService/ContainerStats", std::nullopt},
    {"RuntimeService/ContainerStatus", std::nullopt},
    {"RuntimeService/CreateContainer", ImageMethod::kCreateContainer},
    {"RuntimeService/Exec", std::nullopt},
    {"RuntimeService/ExecSync", std::nullopt},
    {"RuntimeService/GetContainerEvents", std::nullopt},
    {"RuntimeService/ListContainerStats", std::nullopt},
    {"RuntimeService/ListContainers", std::nullopt},
    {"RuntimeService/ListMetricDescriptors", std::nullopt},
    {"RuntimeService/ListPodSandbox", std::nullopt},
    {"RuntimeService/ListPodSandboxMetrics", std::nullopt},
    {"RuntimeService/ListPodSandboxStats", std::nullopt},
    {"RuntimeService/PodSandboxStats", std::nullopt},
    {"RuntimeService/PodSandboxStatus", std::nullopt},
    {"RuntimeService/PortForward", std::nullopt},
    {"RuntimeService/RemoveContainer", std::nullopt},
    {"RuntimeService/RemovePodSandbox", std::nullopt},
    {"RuntimeService/ReopenContainerLog", std::nullopt},
    {"RuntimeService/RestorePod", std::nullopt},
    {"RuntimeService/RunPodSandbox", std::nullopt},
    {"RuntimeService/RuntimeConfig", std::nullopt},
    {"RuntimeService/StartContainer", std::nullopt},
    {"RuntimeService/Status", std::nullopt},
    {"RuntimeService/StopContainer", std::nullopt},
    {"RuntimeService/StopPodSandbox", std::nullopt},
    {"RuntimeService/StreamContainerStats", std::nullopt},
    {"RuntimeService/StreamContainers", std::nullopt},
    {"RuntimeService/StreamPodSandboxMetrics", std::nullopt},
    {"RuntimeService/StreamPodSandboxStats", std::nullopt},
    {"RuntimeService/StreamPodSandboxes", std::nullopt},
    {"RuntimeService/UpdateContainerResources", std::nullopt},
    {"RuntimeService/UpdatePodSandboxResources", std::nullopt},
    {"RuntimeService/UpdateRuntimeConfig", std::nullopt},
    {"RuntimeService/Version", std::nullopt},
};

// Every relayed call is classified, twice (interception, metrics): a binary search keeps that
// to a few comparisons.
constexpr bool SortedByName() {
  for (size_t i = 1; i < std::size(kCriMethods); ++i) {
    if (!(kCriMethods[i - 1].name < kCriMethods[i].name)) return false;
  }
  return true;
}
static_assert(SortedByName(), "kCriMethods must stay sorted by name, without duplicates");

std::optional<size_t> MethodIndex(std::string_view name) {
  const CriMethod* end = std::end(kCriMethods);
  const CriMethod* found = std::lower_bound(
      std::begin(kCriMethods), end, name,
      [](const CriMethod& method, std::string_view key) { return method.name < key; });
  if (found == end || found->name != name) return std::nullopt;
  return static_cast<size_t>(found - std::begin(kCriMethods));
}

}  // namespace

std::string_view ApiVersionName(ApiVersion version) {
  return version == ApiVersion::kV1alpha2 ? "v1alpha2" : "v1";
}

std::span<const CriMethod> CriMethods() {
  return kCriMethods;
}

std::optional<CriPath> ClassifyPath(std::string_view path) {
  constexpr std::string_view kPrefix = "/runtime.";
  if (!path.starts_with(kPrefix)) return std::nullopt;
  path.remove_prefix(kPrefix.size());
  for (ApiVersion version : {ApiVersion::kV1, ApiVersion::kV1alpha2}) {
    std::string_view name = ApiVersionName(version);
    if (path.starts_with(name) && path.substr(name.size()).starts_with('.')) {
      return CriPath{version, MethodIndex(path.substr(name.size() + 1))};
    }
  }
  return std::nullopt;
}

std::string_view MethodName(ImageMethod method) {
  for (const CriMethod& m : kCriMethods) {
    if (m.intercepted == method) return m.name;
  }
  std::abort();  // every ImageMethod is in the table: a programming error otherwise
}

std::optional<InterceptedMethod> ParseMethodPath(std::string_view path) {
  std::optional<CriPath> classified = ClassifyPath(path);
  if (!classified || !classified->method) return std::nullopt;
  const CriMethod& method = kCriMethods[*classified->method];
  if (!method.intercepted) return std::nullopt;
  return InterceptedMethod{*method.intercepted, ApiVersionName(classified->version)};
}

std::string ImageServicePath(std::string_view version, std::string_view method) {
  std::string path = "/runtime.";
  path.append(version).append(".ImageService/").append(method);
  return path;
}

}  // namespace shim::cri
