// The metrics and health endpoint's lifecycle: a stop right after the start (a SIGTERM in the
// first milliseconds of the daemon) must end its thread, not hang the shutdown.
#include "daemon/http_endpoint.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>
#include <thread>

namespace shim::daemon {
namespace {

// A port on 127.0.0.1 that was free a moment ago.
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ADD_FAILURE() << "cannot bind 127.0.0.1:0";
  }
  close(fd);
  return ntohs(address.sin_port);
}

TEST(HttpEndpoint, StopRightAfterStartEndsTheThread) {
  // cpp-httplib's Server::stop() does nothing before its listen thread runs: without the wait
  // in HttpEndpoint::Stop, one of these rounds blocks forever in the join.
  auto rounds = std::async(std::launch::async, [] {
    for (int i = 0; i < 200; ++i) {
      HttpEndpoint endpoint;
      Status started = endpoint.Start(
          "127.0.0.1:" + std::to_string(FreePort()),
          {.metrics = [] { return std::string(); }, .ready = [](std::string*) { return true; }});
      if (!started.ok()) return "round " + std::to_string(i) + ": " + started.message();
      endpoint.Stop();
    }
    return std::string();
  });
  if (rounds.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    // The hung thread cannot be joined: report and leave at once.
    std::fprintf(stderr, "HttpEndpoint::Stop right after Start did not return within 60 s\n");
    std::_Exit(1);
  }
  EXPECT_EQ(rounds.get(), "");
}

}  // namespace
}  // namespace shim::daemon
