// A FIFO of bytes for one direction of one stream: appended at the back as frames arrive,
// taken from the front as the other side's flow control allows. Loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace shim::relay {

class ByteQueue {
 public:
  size_t size() const { return data_.size() - head_; }
  bool empty() const { return size() == 0; }

  void Append(const uint8_t* bytes, size_t n) {
    if (head_ == data_.size()) {  // drained: reuse the allocation from the start
      data_.clear();
      head_ = 0;
    }
    data_.append(reinterpret_cast<const char*>(bytes), n);
  }

  // Copies up to `n` bytes to `out` and drops them; returns how many.
  size_t Take(uint8_t* out, size_t n) {
    n = std::min(n, size());
    std::memcpy(out, data_.data() + head_, n);
    head_ += n;
    if (head_ == data_.size()) {
      data_.clear();
      head_ = 0;
    } else if (head_ > (1u << 20) && head_ > data_.size() / 2) {
      data_.erase(0, head_);  // bound the dead prefix of a long-lived stream
      head_ = 0;
    }
    return n;
  }

  void Clear() {
    std::string().swap(data_);
    head_ = 0;
  }

 private:
  std::string data_;
  size_t head_ = 0;
};

}  // namespace shim::relay
