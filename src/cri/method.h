// The CRI methods the shim intercepts, recognised by their HTTP/2 :path for both API versions.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace shim::cri {

enum class ImageMethod { kPullImage, kImageStatus, kRemoveImage, kListImages, kCreateContainer };

struct InterceptedMethod {
  ImageMethod method;
  std::string_view version;  // "v1" or "v1alpha2"
};

// "/runtime.v1.ImageService/PullImage" -> {kPullImage, "v1"}; nullopt for everything the shim
// relays untouched.
std::optional<InterceptedMethod> ParseMethodPath(std::string_view path);

// "/runtime.<version>.ImageService/ImageStatus" and friends, for the shim's own calls.
std::string ImageServicePath(std::string_view version, std::string_view method);

}  // namespace shim::cri
