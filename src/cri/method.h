// Which CRI method and API version an HTTP/2 :path names: the one place that knows the CRI's
// method list, used by the image-call handlers (what to intercept) and by the metrics (labels).
// Pure functions over constant tables; any thread.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace shim::cri {

enum class ImageMethod { kPullImage, kImageStatus, kRemoveImage, kListImages, kCreateContainer };
inline constexpr size_t kImageMethodCount = 5;

enum class ApiVersion { kV1, kV1alpha2 };
inline constexpr size_t kApiVersionCount = 2;

// "v1" or "v1alpha2", as in the :path.
std::string_view ApiVersionName(ApiVersion version);

struct CriMethod {
  std::string_view name;                   // "ImageService/PullImage"
  std::optional<ImageMethod> intercepted;  // set when the shim answers it itself
};

// Every method of the CRI's ImageService and RuntimeService (both versions, up to cri-api
// v0.36), sorted by name. Indexes into it are stable for the life of the process.
std::span<const CriMethod> CriMethods();

struct CriPath {
  ApiVersion version;
  std::optional<size_t> method;  // index into CriMethods(); nullopt for a method the CRI lacks
};

// "/runtime.v1alpha2.RuntimeService/Version" -> {kV1alpha2, index of "RuntimeService/Version"};
// nullopt when the path is not under "/runtime.v1." or "/runtime.v1alpha2.".
std::optional<CriPath> ClassifyPath(std::string_view path);

// "ImageService/PullImage" for kPullImage.
std::string_view MethodName(ImageMethod method);

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
