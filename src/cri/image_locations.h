// Remembers under which name each image was stored (kubelet's name -> the candidate that
// served it), so status, remove and create resolve in one runtime call in the common case.
// Bounded: the least recently used entries go first. Loop thread only.
#pragma once

#include <list>
#include <optional>
#include <string>
#include <unordered_map>

namespace shim::cri {

class ImageLocations {
 public:
  explicit ImageLocations(size_t capacity = 4096) : capacity_(capacity) {}

  void Remember(const std::string& requested, const std::string& stored);
  std::optional<std::string> Find(const std::string& requested);
  void Forget(const std::string& requested);
  size_t size() const { return index_.size(); }

 private:
  using Entry = std::pair<std::string, std::string>;
  size_t capacity_;
  std::list<Entry> order_;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
};

}  // namespace shim::cri
