// What the relay tells the rest of the daemon about each finished call (metrics). Loop thread
// only; implementations must be quick and must not block.
#pragma once

#include <chrono>
#include <string_view>

namespace shim::relay {

class CallObserver {
 public:
  virtual ~CallObserver() = default;
  // Maps a :path to a small method id, so nothing per call keeps the path. Depends on the path
  // alone: the relay remembers the answer.
  virtual int MethodId(std::string_view path) = 0;
  // `grpc_code` is the status the caller got, or kCallReset when the stream was reset without
  // one (the caller then sees CANCELLED or INTERNAL).
  virtual void OnCallFinished(int method_id, int grpc_code, std::chrono::nanoseconds duration) = 0;

  static constexpr int kCallReset = -1;
};

}  // namespace shim::relay
