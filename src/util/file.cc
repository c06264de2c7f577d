#include "util/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace shim::util {

StatusOr<std::string> ReadWholeFile(const std::string& path, size_t max_bytes, FileRule rule) {
  auto failed = [&path](int error) {
    return Status::Error("cannot read " + path + ": " + std::strerror(error));
  };
  int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY;
  if (rule == FileRule::kRegularFileNoLink) flags |= O_NOFOLLOW;
  // O_NONBLOCK: opening a fifo planted at the path must not block; on a regular file it
  // changes nothing.
  if (rule != FileRule::kAny) flags |= O_NONBLOCK;
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) {
    if (errno == ELOOP && rule == FileRule::kRegularFileNoLink) {
      return Status::Error("cannot read " + path + ": a symbolic link, not a regular file");
    }
    return failed(errno);
  }
  if (rule != FileRule::kAny) {
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return Status::Error("cannot read " + path + ": not a regular file");
    }
  }
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
