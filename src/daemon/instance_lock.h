// One shim per socket: an flock on a lock file beside the socket, taken before the socket is
// touched, so a second instance stops with a message naming the holder instead of silently
// stealing the socket (a bind would otherwise replace it).
#pragma once

#include <string>

#include "util/status.h"

namespace shim::daemon {

class InstanceLock {
 public:
  InstanceLock() = default;
  ~InstanceLock();
  InstanceLock(const InstanceLock&) = delete;
  InstanceLock& operator=(const InstanceLock&) = delete;

  // Takes the lock at `path` (created 0600 if missing) and writes this process's pid into it.
  // Fails, naming the holder's pid, when another process holds it. Refuses, without writing, a
  // path that is a symbolic link, a hard link, or not a regular file (directory, fifo, device).
  Status Acquire(const std::string& path);

 private:
  int fd_ = -1;
};

}  // namespace shim::daemon
