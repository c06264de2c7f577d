#include "cri/image_locations.h"

namespace shim::cri {

void ImageLocations::Remember(const std::string& requested, const std::string& stored) {
  auto it = index_.find(requested);
  if (it != index_.end()) {
    it->second->second = stored;
    order_.splice(order_.begin(), order_, it->second);
    return;
  }
  order_.emplace_front(requested, stored);
  index_[requested] = order_.begin();
  if (index_.size() > capacity_) {
    index_.erase(order_.back().first);
    order_.pop_back();
  }
}

std::optional<std::string> ImageLocations::Find(const std::string& requested) {
  auto it = index_.find(requested);
  if (it == index_.end()) return std::nullopt;
  order_.splice(order_.begin(), order_, it->second);
  return it->second->second;
}

void ImageLocations::Forget(const std::string& requested) {
  auto it = index_.find(requested);
  if (it == index_.end()) return;
  order_.erase(it->second);
  index_.erase(it);
}

}  // namespace shim::cri
