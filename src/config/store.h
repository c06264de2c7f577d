// The configuration in force: one snapshot, replaced whole on reload. Any thread may read it;
// a reader keeps the snapshot it got for as long as it needs (a call in flight is never changed
// under it).
#pragma once

#include <mutex>
#include <utility>

#include "config/config.h"

namespace shim::config {

class ConfigStore {
 public:
  explicit ConfigStore(ConfigPtr initial) : current_(std::move(initial)) {}

  ConfigPtr Get() const {
    std::lock_guard lock(mutex_);
    return current_;
  }

  // Returns the snapshot it replaced.
  ConfigPtr Swap(ConfigPtr next) {
    std::lock_guard lock(mutex_);
    std::swap(current_, next);
    return next;
  }

 private:
  mutable std::mutex mutex_;
  ConfigPtr current_;  // GUARDED_BY(mutex_)
};

}  // namespace shim::config
