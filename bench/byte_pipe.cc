// cri-byte-pipe LISTEN_SOCKET UPSTREAM_SOCKET: the floor the benchmark reads the shim against.
// A plain byte pipe in the shim's place: one thread, epoll, and for each accepted unix
// connection one connection to the upstream socket, with every byte read on one side written to
// the other as it comes. No HTTP/2, no parsing, no per-call state: what it costs per call is
// what any relay on this socket pair must pay in the kernel (reads, writes, wake-ups).
//
// Blocking writes keep it short: on a local socket pair with small CRI messages a write never
// waits long, and the benchmark's answers are far below the socket buffers. Runs until SIGTERM.
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_map>

namespace {

int ListenUnix(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
  unlink(path.c_str());
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      listen(fd, 128) != 0) {
    std::fprintf(stderr, "cri-byte-pipe: cannot listen on %s: %s\n", path.c_str(),
                 std::strerror(errno));
    return -1;
  }
  return fd;
}

int ConnectUnix(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

bool WriteAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t written = write(fd, data, n);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) return false;
    data += written;
    n -= static_cast<size_t>(written);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: cri-byte-pipe LISTEN_SOCKET UPSTREAM_SOCKET\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  std::string upstream = argv[2];
  int listener = ListenUnix(argv[1]);
  if (listener < 0) return 1;
  int epoll = epoll_create1(EPOLL_CLOEXEC);
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = listener;
  epoll_ctl(epoll, EPOLL_CTL_ADD, listener, &event);
  std::unordered_map<int, int> peer;  // each side's other side
  auto drop = [&](int fd) {
    auto it = peer.find(fd);
    if (it == peer.end()) return;
    int other = it->second;
    peer.erase(fd);
    peer.erase(other);
    close(fd);
    close(other);
  };
  epoll_event events[64];
  static char buffer[1 << 16];
  for (;;) {
    int n = epoll_wait(epoll, events, 64, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return 1;
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == listener) {
        int client;
        while ((client = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC)) >= 0) {
          int server = ConnectUnix(upstream);
          if (server < 0) {
            close(client);
            continue;
          }
          peer[client] = server;
          peer[server] = client;
          for (int side : {client, server}) {
            epoll_event e{};
            e.events = EPOLLIN;
            e.data.fd = side;
            epoll_ctl(epoll, EPOLL_CTL_ADD, side, &e);
          }
        }
        continue;
      }
      auto it = peer.find(fd);
      if (it == peer.end()) continue;
      ssize_t got = read(fd, buffer, sizeof buffer);
      if (got > 0 && WriteAll(it->second, buffer, static_cast<size_t>(got))) continue;
      if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      drop(fd);
    }
  }
}
