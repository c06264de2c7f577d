#include "relay/unix_socket.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace shim::relay {

StatusOr<int> ListenUnix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return Status::Error("socket path " + path + " is longer than " +
                         std::to_string(sizeof addr.sun_path - 1) + " characters");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::Error(std::string("socket: ") + std::strerror(errno));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    std::string error = "bind " + path + ": " + std::strerror(errno);
    close(fd);
    return Status::Error(error);
  }
  if (listen(fd, 1024) != 0) {
    std::string error = "listen " + path + ": " + std::strerror(errno);
    close(fd);
    return Status::Error(error);
  }
  return fd;
}

}  // namespace shim::relay
