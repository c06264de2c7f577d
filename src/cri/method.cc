#include "cri/method.h"

namespace shim::cri {

std::optional<InterceptedMethod> ParseMethodPath(std::string_view path) {
  constexpr std::string_view kPrefix = "/runtime.";
  if (!path.starts_with(kPrefix)) return std::nullopt;
  path.remove_prefix(kPrefix.size());
  std::string_view version;
  if (path.starts_with("v1alpha2.")) {
    version = "v1alpha2";
  } else if (path.starts_with("v1.")) {
    version = "v1";
  } else {
    return std::nullopt;
  }
  path.remove_prefix(version.size() + 1);
  if (path == "ImageService/PullImage") return InterceptedMethod{ImageMethod::kPullImage, version};
  if (path == "ImageService/ImageStatus") {
    return InterceptedMethod{ImageMethod::kImageStatus, version};
  }
  if (path == "ImageService/RemoveImage") {
    return InterceptedMethod{ImageMethod::kRemoveImage, version};
  }
  if (path == "ImageService/ListImages") {
    return InterceptedMethod{ImageMethod::kListImages, version};
  }
  if (path == "RuntimeService/CreateContainer") {
    return InterceptedMethod{ImageMethod::kCreateContainer, version};
  }
  return std::nullopt;
}

std::string ImageServicePath(std::string_view version, std::string_view method) {
  std::string path = "/runtime.";
  path.append(version).append(".ImageService/").append(method);
  return path;
}

}  // namespace shim::cri
