#include "relay/upstream.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

namespace shim::relay {

UpstreamConnection::UpstreamConnection(EventLoop& loop, int fd, std::string name)
    : Http2Connection(loop, fd, std::move(name), Role::kClient) {
  Start({{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
         {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kStreamWindow},
         {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, kMaxHeaderList}});
}

UpstreamConnection::~UpstreamConnection() = default;

int32_t UpstreamConnection::Submit(const Headers& headers, std::shared_ptr<UpstreamStream> stream,
                                   bool end_stream) {
  if (!accepting()) return NGHTTP2_ERR_START_STREAM_NOT_ALLOWED;
  int32_t id = OpenStream(headers, end_stream);
  if (id < 0) {
    draining_ = true;
    return NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE;
  }
  Attach(id, std::move(stream));
  return id;
}

void UpstreamConnection::Cancel(int32_t stream_id, uint32_t error_code) {
  if (!Detach(stream_id)) return;
  ResetStream(stream_id, error_code);
  CloseIfDrained();
}

void UpstreamConnection::CloseIfDrained() {
  if (draining_ && active_streams() == 0) Close("drained");
}

std::shared_ptr<UpstreamStream> UpstreamConnection::Find(int32_t stream_id) {
  // Only UpstreamStreams are attached here.
  return std::static_pointer_cast<UpstreamStream>(HandlerOf(stream_id));
}

void UpstreamConnection::OnClosed(const std::string& reason,
                                  std::vector<std::shared_ptr<StreamHandler>> handlers) {
  draining_ = true;
  for (auto& handler : handlers) {
    static_cast<UpstreamStream*>(handler.get())->OnUpstreamClosed(NGHTTP2_INTERNAL_ERROR, reason);
  }
}

void UpstreamConnection::OnPeerGoAway(int32_t last_stream_id, uint32_t error_code) {
  // Calls above last_stream_id are refused through OnStreamClosed; the rest finish here.
  draining_ = true;
  spdlog::debug("runtime sent GOAWAY conn={} last_stream={} code={}", name(), last_stream_id,
                error_code);
}

void UpstreamConnection::OnHeaderBlock(int32_t stream_id, bool first, const Headers& headers,
                                       bool end_stream) {
  auto stream = Find(stream_id);
  if (!stream) return;
  if (first) {
    stream->OnResponseHeaders(headers, end_stream);
  } else if (end_stream) {
    stream->OnResponseTrailers(headers);
  }
}

void UpstreamConnection::OnData(int32_t stream_id, const uint8_t* data, size_t n) {
  auto stream = Find(stream_id);
  if (!stream) {
    Consume(stream_id, n);  // nobody will pass it on: give the window back now
    return;
  }
  stream->OnResponseData(data, n);
}

void UpstreamConnection::OnEndStream(int32_t) {}

void UpstreamConnection::OnStreamClosed(int32_t, std::shared_ptr<StreamHandler> handler,
                                        uint32_t error_code) {
  if (!handler) return;
  CloseIfDrained();
  static_cast<UpstreamStream*>(handler.get())
      ->OnUpstreamClosed(error_code, error_code == NGHTTP2_NO_ERROR
                                         ? std::string()
                                         : std::string("runtime reset the stream: ") +
                                               nghttp2_http2_strerror(error_code));
}

ssize_t UpstreamConnection::ReadBody(int32_t stream_id, uint8_t* buf, size_t length,
                                     uint32_t* data_flags) {
  auto stream = Find(stream_id);
  if (!stream) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // resets a forgotten stream
  return stream->ReadRequest(buf, length, data_flags);
}

// --- UpstreamPool ---

UpstreamPool::UpstreamPool(EventLoop& loop, std::string socket_path)
    : loop_(loop), socket_path_(std::move(socket_path)) {}

UpstreamPool::~UpstreamPool() = default;

bool UpstreamPool::connected() const {
  return current_ != nullptr && current_->accepting();
}

UpstreamConnection* UpstreamPool::Get(std::string* error) {
  if (current_ != nullptr && current_->accepting()) return current_;
  current_ = nullptr;

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + std::strerror(errno);
    return nullptr;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof addr.sun_path) {
    close(fd);
    *error = "runtime socket path is too long: " + socket_path_;
    return nullptr;
  }
  std::memcpy(addr.sun_path, socket_path_.c_str(), socket_path_.size() + 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    // EAGAIN on a unix socket means a full backlog, not a connection in progress.
    *error = "cannot reach the runtime at " + socket_path_ + ": connect: " + std::strerror(errno);
    close(fd);
    return nullptr;
  }
  auto connection = std::make_unique<UpstreamConnection>(
      loop_, fd, "runtime#" + std::to_string(++connections_made_));
  connection->set_on_closed([this](Http2Connection* c) { Drop(c); });
  current_ = connection.get();
  connections_.push_back(std::move(connection));
  if (connections_made_ > 1) spdlog::info("reconnected to the runtime socket={}", socket_path_);
  return current_;
}

void UpstreamPool::Drop(Http2Connection* connection) {
  if (connection == current_) current_ = nullptr;
  auto it = std::find_if(connections_.begin(), connections_.end(),
                         [&](const auto& c) { return c.get() == connection; });
  if (it == connections_.end()) return;
  // Destroy at the end of the turn: the close notification may still be on the stack.
  auto doomed = std::make_shared<std::unique_ptr<UpstreamConnection>>(std::move(*it));
  connections_.erase(it);
  loop_.Defer([doomed] {});
}

void UpstreamPool::CloseAll() {
  for (auto& c : connections_) c->Close("shutting down");
}

}  // namespace shim::relay
