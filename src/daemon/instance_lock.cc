#include "daemon/instance_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace shim::daemon {
namespace {

const char* KindOf(mode_t mode) {
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a fifo";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "not a regular file";
}

Status NotALockFile(const std::string& path, const std::string& what) {
  return Status::Error("the lock file " + path + " is " + what +
                       "; the shim runs as root and does not write through it: remove it (the "
                       "shim creates its lock file itself) or choose another `shim` path");
}

// REQUIRES: st describes the file at `path` (lstat or fstat).
Status CheckLockFile(const std::string& path, const struct stat& st) {
  if (!S_ISREG(st.st_mode)) return NotALockFile(path, KindOf(st.st_mode));
  // A hard link to another file would get that file truncated just as a symbolic link would.
  if (st.st_nlink > 1) return NotALockFile(path, "a file with other hard links");
  return Status::Ok();
}

}  // namespace

InstanceLock::~InstanceLock() {
  if (fd_ >= 0) close(fd_);  // releases the flock; the file stays, harmlessly
}

Status InstanceLock::Acquire(const std::string& path) {
  // Checked before opening too, so that a fifo or a device at the path is never even opened.
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (Status s = CheckLockFile(path, st); !s.ok()) return s;
  } else if (errno != ENOENT) {
    return Status::Error("cannot inspect the lock file " + path + ": " + std::strerror(errno));
  }
  // O_NOFOLLOW and the fstat below close the race with a link or a fifo planted after lstat;
  // O_NONBLOCK keeps such a fifo from blocking the open. No O_TRUNC: the holder's pid must stay.
  int fd =
      open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0600);
  if (fd < 0) {
    int err = errno;
    if (err == ELOOP) return NotALockFile(path, "a symbolic link");
    if (err == EISDIR) return NotALockFile(path, "a directory");
    return Status::Error("cannot open the lock file " + path + ": " + std::strerror(err));
  }
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return Status::Error("cannot inspect the lock file " + path + ": " + std::strerror(err));
  }
  if (Status s = CheckLockFile(path, st); !s.ok()) {
    close(fd);
    return s;
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
