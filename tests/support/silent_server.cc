#include "silent_server.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>

#include "test_util.h"

namespace shim::testing {

SilentServer::SilentServer() {
  fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  port_ = FreeLoopbackPort();
  addr.sin_port = htons(static_cast<uint16_t>(port_));
  if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd_, 64) != 0) {
    close(fd_);
    throw std::runtime_error("silent server: cannot listen");
  }
  thread_ = std::thread([this] {
    while (!stop_) {
      int c = accept(fd_, nullptr, nullptr);
      if (c >= 0) {
        held_.push_back(c);
        ++held_count_;
      }
    }
  });
}

SilentServer::~SilentServer() {
  stop_ = true;
  shutdown(fd_, SHUT_RDWR);  // wakes the accept
  thread_.join();
  close(fd_);
  for (int c : held_) close(c);
}

}  // namespace shim::testing
