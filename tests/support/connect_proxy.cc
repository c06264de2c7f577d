#include "connect_proxy.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "test_util.h"

namespace shim::testing {
namespace {

bool SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

// `host` is a numeric address from the host map: never a DNS lookup.
int Dial(const std::string& host, const std::string& port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0) return -1;
  int fd = -1;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  return fd;
}

std::string HeaderValue(const std::string& head, const std::string& name) {
  std::string lower_head = head;
  std::transform(lower_head.begin(), lower_head.end(), lower_head.begin(), ::tolower);
  std::string needle = "\r\n" + name + ":";
  size_t at = lower_head.find(needle);
  if (at == std::string::npos) return "";
  size_t start = at + needle.size();
  size_t end = head.find("\r\n", start);
  std::string value = head.substr(start, end - start);
  while (!value.empty() && value.front() == ' ') value.erase(0, 1);
  return value;
}

}  // namespace

ConnectProxy::ConnectProxy(std::map<std::string, std::string> hosts) : hosts_(std::move(hosts)) {
  listener_ = BindLoopback(&port_, "ConnectProxy: cannot listen");
  if (listen(listener_, 16) != 0) {
    throw std::runtime_error(std::string("ConnectProxy: cannot listen: ") + std::strerror(errno));
  }
  acceptor_ = std::thread([this] { Accept(); });
}

ConnectProxy::~ConnectProxy() {
  stopping_ = true;
  shutdown(listener_, SHUT_RDWR);
  acceptor_.join();
  close(listener_);
  std::vector<std::thread> workers;
  {
    std::lock_guard lock(mutex_);
    for (int fd : open_) shutdown(fd, SHUT_RDWR);
    workers.swap(workers_);
  }
  for (auto& worker : workers) worker.join();
}

std::string ConnectProxy::Url() const {
  return "http://127.0.0.1:" + std::to_string(port_);
}

std::vector<ConnectProxy::Request> ConnectProxy::requests() const {
  std::lock_guard lock(mutex_);
  return requests_;
}

void ConnectProxy::Accept() {
  while (!stopping_) {
    int client = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      if (stopping_) return;
      continue;
    }
    std::lock_guard lock(mutex_);
    open_.push_back(client);
    workers_.emplace_back([this, client] { Serve(client); });
  }
}

void ConnectProxy::Serve(int client) {
  std::string head;
  char c;
  while (head.size() < 16384 && (head.size() < 4 || head.compare(head.size() - 4, 4, "\r\n\r\n"))) {
    if (recv(client, &c, 1, 0) != 1) break;
    head += c;
  }
  std::string line = head.substr(0, head.find("\r\n"));
  Request request;
  request.method = line.substr(0, line.find(' '));
  size_t target_at = line.find(' ') == std::string::npos ? line.size() : line.find(' ') + 1;
  request.target = line.substr(target_at, line.find(' ', target_at) - target_at);
  request.proxy_authorization = HeaderValue(head, "proxy-authorization");
  {
    std::lock_guard lock(mutex_);
    requests_.push_back(request);
  }
  int upstream = -1;
  if (request.method == "CONNECT") {
    size_t colon = request.target.rfind(':');
    std::string host = request.target.substr(0, colon);
    std::string port = colon == std::string::npos ? "443" : request.target.substr(colon + 1);
    // Only names of the host map are reachable: anything else is 502 at once, without asking
    // a resolver (tests must not depend on DNS, or on how fast it fails).
    if (auto mapped = hosts_.find(host); mapped != hosts_.end())
      upstream = Dial(mapped->second, port);
    SendAll(client, upstream >= 0 ? "HTTP/1.1 200 Connection established\r\n\r\n"
                                  : "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
  } else {
    SendAll(client, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n");
  }
  if (upstream >= 0) {
    {
      std::lock_guard lock(mutex_);
      open_.push_back(upstream);
      if (stopping_) shutdown(upstream, SHUT_RDWR);
    }
    pollfd fds[2] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}};
    char buffer[16384];
    for (bool open = true; open;) {
      if (poll(fds, 2, 1000) < 0) break;
      for (int i = 0; i < 2 && open; ++i) {
        if (fds[i].revents == 0) continue;
        ssize_t n = recv(fds[i].fd, buffer, sizeof buffer, 0);
        open = n > 0 && SendAll(fds[1 - i].fd, std::string(buffer, static_cast<size_t>(n)));
      }
      if (stopping_) open = false;
    }
  }
  std::lock_guard lock(mutex_);
  for (int fd : {client, upstream}) {
    if (fd < 0) continue;
    open_.erase(std::remove(open_.begin(), open_.end(), fd), open_.end());
    close(fd);
  }
}

}  // namespace shim::testing
