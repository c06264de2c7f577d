#include "daemon/instance_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace shim::daemon {

InstanceLock::~InstanceLock() {
  if (fd_ >= 0) close(fd_);  // releases the flock; the file stays, harmlessly
}

Status InstanceLock::Acquire(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Status::Error("cannot open lock file " + path + ": " + std::strerror(errno));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    char buf[32] = {};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    if (err == EWOULDBLOCK) {
      std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "unknown";
      while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
      return Status::Error("another image-cri-shim (pid " + holder + ") holds " + path +
                           " and serves this socket; stop it first or give this one another "
                           "`shim` path");
    }
    return Status::Error("cannot lock " + path + ": " + std::strerror(err));
  }
  std::string pid = std::to_string(getpid()) + "\n";
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // The lock holds either way; only the holder's name in a rival's message is lost.
  }
  fd_ = fd;
  return Status::Ok();
}

}  // namespace shim::daemon
