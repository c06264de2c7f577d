#include "cri/method.h"

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

std::optional<size_t> MethodIndex(std::string_view name) {
  for (size_t i = 0; i < std::size(kCriMethods); ++i) {
    if (kCriMethods[i].name == name) return i;
  }
  return std::nullopt;
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
