// net::HttpGet (net/http_client.h) where the network must misbehave on purpose: this binary
// interposes getaddrinfo so that test names resolve to chosen loopback addresses without DNS
// ("fallback.test": 127.0.0.2, then 127.0.0.1); every other name goes to the real resolver.
#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "net/http_client.h"
#include "test_util.h"

extern "C" int getaddrinfo(const char* node, const char* service, const addrinfo* hints,
                           addrinfo** found) noexcept {
  using Real = int (*)(const char*, const char*, const addrinfo*, addrinfo**);
  static Real real = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "getaddrinfo"));
  if (node == nullptr || std::strcmp(node, "fallback.test") != 0) {
    return real(node, service, hints, found);
  }
  // Two numeric lookups chained: glibc's freeaddrinfo frees node by node.
  addrinfo numeric{};
  numeric.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  numeric.ai_socktype = SOCK_STREAM;
  addrinfo* first = nullptr;
  addrinfo* second = nullptr;
  if (int rc = real("127.0.0.2", service, &numeric, &first); rc != 0) return rc;
  if (int rc = real("127.0.0.1", service, &numeric, &second); rc != 0) {
    freeaddrinfo(first);
    return rc;
  }
  addrinfo* last = first;
  while (last->ai_next != nullptr) last = last->ai_next;
  last->ai_next = second;
  *found = first;
  return 0;
}

namespace shim::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A plain HTTP server on 127.0.0.1:<any port>, serving GET /ok.
class PlainServer {
 public:
  PlainServer() {
    server_.Get("/ok", [](const httplib::Request&, httplib::Response& response) {
      response.set_content("fine", "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) throw std::runtime_error("PlainServer: cannot listen on 127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    if (!WaitUntil([this] { return server_.is_running(); }, 10s, 5ms)) {
      std::fprintf(stderr, "PlainServer: the accept loop did not start within 10 s\n");
      std::abort();
    }
  }
  ~PlainServer() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

// A listener on `ip`:`port` whose accept queue is full: further SYNs are dropped, so a connect
// to it times out, as to a black-holed route.
class BlackHole {
 public:
  BlackHole(const char* ip, int port) {
    listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, ip, &address.sin_addr);
    if (listener_ < 0 ||
        bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        listen(listener_, 0) != 0) {
      throw std::runtime_error(std::string("BlackHole: ") + std::strerror(errno));
    }
    // The queue holds one connection (backlog 0); the second stays half-open.
    for (int i = 0; i < 2; ++i) {
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
      fillers_.push_back(fd);
      std::this_thread::sleep_for(50ms);
    }
  }
  ~BlackHole() {
    for (int fd : fillers_) close(fd);
    close(listener_);
  }

 private:
  int listener_ = -1;
  std::vector<int> fillers_;
};

// An address that times out does not end the connect: the next one gets the rest of the time
// (a black-holed IPv6 route falls back to IPv4, as with libcurl and Go).
TEST(HttpGet, AnAddressThatTimesOutFallsBackToTheNext) {
  PlainServer server;
  BlackHole hole("127.0.0.2", server.port());
  net::HttpRequest request;
  request.url = "http://fallback.test:" + std::to_string(server.port()) + "/ok";
  request.connect_timeout = 2s;
  net::ProxyEnv no_proxy;
  request.proxy_env = &no_proxy;
  std::string body;
  auto started = Clock::now();
  net::HttpResponse response = net::HttpGet(request, [&](int, std::string_view data) {
    body.append(data);
    return true;
  });
  auto elapsed = Clock::now() - started;
  EXPECT_EQ(response.status, 200) << response.error;
  EXPECT_EQ(body, "fine");
  // 127.0.0.2 got half of the 2 s (two addresses), then 127.0.0.1 answered.
  EXPECT_GE(elapsed, 900ms);
  EXPECT_LT(elapsed, 1900ms);
}

}  // namespace
}  // namespace shim::testing
