// What the image service tells the rest of the daemon about pulls (metrics).
#pragma once

#include <string>
#include <string_view>

namespace shim::cri {

// Told about each registry a pull tries (metrics). Loop thread; must not block.
class PullObserver {
 public:
  virtual ~PullObserver() = default;
  // `registry` is a configured address or "origin"; `result` one of ok, image_absent,
  // registry_down, credentials_rejected, invalid_reference, failed.
  virtual void OnPullResult(const std::string& registry, std::string_view result) = 0;
  // A pull moved on from a failed registry to the next one.
  virtual void OnFailover() = 0;
  // A pull the node's policy refused; `rule` is "deny:<prefix>" or "allow".
  virtual void OnPullRefused(const std::string& rule) = 0;
};

}  // namespace shim::cri
