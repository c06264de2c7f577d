// gRPC over HTTP/2, the parts the relay speaks itself: header lists, status codes, the 5-byte
// message prefix, and trailers-only error answers. Pure functions; thread-safe.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shim::relay {

struct Header {
  std::string name;
  std::string value;
};
using Headers = std::vector<Header>;

// Value of the first header named `name`, or nullptr.
const std::string* FindHeader(const Headers& headers, std::string_view name);

// gRPC status codes (grpc/status.h), the ones the shim produces or reasons about.
enum class GrpcCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kUnauthenticated = 16,
};
std::string_view GrpcCodeName(int code);

// The grpc-status of a header block (trailers, or a trailers-only answer), or `missing` when it
// has none or it is not a number.
int GrpcStatusOf(const Headers& headers, int missing);

// Largest message the shim reassembles or relays: kubelet's and containerd's limit.
inline constexpr size_t kMaxMessageBytes = 16 * 1024 * 1024;
inline constexpr size_t kMessagePrefixBytes = 5;

// `message` with the gRPC prefix (uncompressed flag, big-endian length).
std::string FrameMessage(std::string_view message);

// The single uncompressed message of a unary body. nullopt when the body is not exactly one
// uncompressed message (compressed, truncated, several): the caller then relays it untouched.
std::optional<std::string_view> SingleMessage(std::string_view body);

// grpc-message is percent-encoded on the wire (gRPC HTTP/2 spec).
std::string PercentEncode(std::string_view text);
std::string PercentDecode(std::string_view text);

// A complete trailers-only answer: :status 200, content-type, grpc-status, grpc-message.
Headers TrailersOnly(GrpcCode code, std::string_view message);

// Response headers the shim sends before a message body of its own.
Headers ResponseHeaders();
// Trailers for a finished answer.
Headers StatusTrailers(GrpcCode code, std::string_view message);

}  // namespace shim::relay
