#include "daemon/http_endpoint.h"

#include <httplib.h>

namespace shim::daemon {

HttpEndpoint::HttpEndpoint() = default;
HttpEndpoint::~HttpEndpoint() {
  Stop();
}

Status HttpEndpoint::Start(const std::string& address, Handlers handlers) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) {
    return Status::Error("metricsAddress \"" + address + "\" is not host:port");
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = 0;
  try {
    port = std::stoi(address.substr(colon + 1));
  } catch (...) {
    port = -1;
  }
  if (port <= 0 || port > 65535) {
    return Status::Error("metricsAddress \"" + address + "\" has no valid port");
  }
  server_ = std::make_unique<httplib::Server>();
  // Two workers: a scrape and a probe at once; nothing here is heavy.
  server_->new_task_queue = [] { return new httplib::ThreadPool(2); };
  server_->Get("/metrics",
               [metrics = handlers.metrics](const httplib::Request&, httplib::Response& response) {
                 response.set_content(metrics(), "text/plain; version=0.0.4; charset=utf-8");
               });
  server_->Get("/healthz", [](const httplib::Request&, httplib::Response& response) {
    response.set_content("ok\n", "text/plain");
  });
  server_->Get("/readyz",
               [ready = handlers.ready](const httplib::Request&, httplib::Response& response) {
                 std::string why;
                 if (ready(&why)) {
                   response.set_content("ok\n", "text/plain");
                 } else {
                   response.status = 503;
                   response.set_content("not ready: " + why + "\n", "text/plain");
                 }
               });
  if (!server_->bind_to_port(host.c_str(), port)) {
    server_.reset();
    return Status::Error("cannot listen on metricsAddress " + address +
                         " (in use, or not an address of this host)");
  }
  listen_returned_ = false;
  thread_ = std::thread([this] {
    server_->listen_after_bind();
    listen_returned_ = true;
  });
  return Status::Ok();
}

void HttpEndpoint::Stop() {
  if (server_) {
    // cpp-httplib's stop() does nothing until the thread is inside listen_after_bind, which
    // would then serve forever and the join below would hang (a SIGTERM right after start).
    while (thread_.joinable() && !server_->is_running() && !listen_returned_) {
      std::this_thread::yield();
    }
    server_->stop();
  }
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

}  // namespace shim::daemon
