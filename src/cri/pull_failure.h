// What a failed pull says about the registry it went to, read from the runtime's answer
// (containerd's codes and messages: see the table in docs/architecture.md).
#pragma once

#include <string>
#include <string_view>

namespace shim::cri {

enum class PullFailure {
  kImageAbsent,       // the registry answered and has no such image: try the next one
  kRegistryDown,      // refused, timed out, TLS or 5xx: mark it down, try the next one
  kAuthRejected,      // 401/403 with the credentials given: try the next one, say so
  kInvalidReference,  // the name itself is bad: no registry will take it
  kOther,             // anything else: try the next one
};

PullFailure ClassifyPullFailure(int grpc_code, std::string_view message);
std::string_view PullFailureName(PullFailure failure);

}  // namespace shim::cri
