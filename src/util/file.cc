#include "util/file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace shim::util {

StatusOr<std::string> ReadWholeFile(const std::string& path, size_t max_bytes) {
  auto failed = [&path](int error) {
    return Status::Error("cannot read " + path + ": " + std::strerror(error));
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return failed(errno);
  std::string content;
  char buffer[16384];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int error = errno;  // a directory fails here (EISDIR), not at open
      ::close(fd);
      return failed(error);
    }
    if (n == 0) break;
    // Bounded, so that a path pointing at a device or a runaway file cannot fill the memory.
    if (content.size() + static_cast<size_t>(n) > max_bytes) {
      ::close(fd);
      return Status::Error("cannot read " + path + ": larger than " + std::to_string(max_bytes) +
                           " bytes");
    }
    content.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return content;
}

}  // namespace shim::util
