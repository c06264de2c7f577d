#include "cri/pull_failure.h"

#include <array>

namespace shim::cri {

namespace {
bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}
}  // namespace

PullFailure ClassifyPullFailure(int grpc_code, std::string_view message) {
  if (grpc_code == 5 /* NOT_FOUND */) return PullFailure::kImageAbsent;
  if (Contains(message, "invalid reference format")) return PullFailure::kInvalidReference;
  if (Contains(message, "401 Unauthorized") || Contains(message, "403 Forbidden") ||
      Contains(message, "unauthorized") || Contains(message, "denied: requested access")) {
    return PullFailure::kAuthRejected;
  }
  // containerd reports a missing manifest in several words depending on the registry.
  if (Contains(message, ": not found") || Contains(message, "manifest unknown") ||
      Contains(message, "name unknown")) {
    return PullFailure::kImageAbsent;
  }
  static constexpr std::array<std::string_view, 14> kDown = {"connection refused",
                                                             "no such host",
                                                             "i/o timeout",
                                                             "timeout",
                                                             "connection reset",
                                                             "x509:",
                                                             "tls:",
                                                             "certificate",
                                                             "no route to host",
                                                             "network is unreachable",
                                                             "500 Internal Server Error",
                                                             "502 Bad Gateway",
                                                             "503 Service Unavailable",
                                                             "504 Gateway Timeout"};
  for (auto needle : kDown) {
    if (Contains(message, needle)) return PullFailure::kRegistryDown;
  }
  if (grpc_code == 14 /* UNAVAILABLE */ || grpc_code == 4 /* DEADLINE_EXCEEDED */) {
    return PullFailure::kRegistryDown;
  }
  return PullFailure::kOther;
}

std::string_view PullFailureName(PullFailure failure) {
  switch (failure) {
    case PullFailure::kImageAbsent:
      return "image not found";
    case PullFailure::kRegistryDown:
      return "registry unreachable";
    case PullFailure::kAuthRejected:
      return "credentials rejected";
    case PullFailure::kInvalidReference:
      return "invalid reference";
    case PullFailure::kOther:
      return "pull failed";
  }
  return "pull failed";
}

}  // namespace shim::cri
