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

namespace {
UpstreamConnection* Self(void* user_data) {
  return static_cast<UpstreamConnection*>(static_cast<Http2Connection*>(user_data));
}
}  // namespace

UpstreamConnection::UpstreamConnection(EventLoop& loop, int fd, std::string name)
    : Http2Connection(loop, fd, std::move(name)) {
  nghttp2_session_callbacks* cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, OnBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cb, OnHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, OnFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, OnDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, OnStreamClose);
  nghttp2_option* option = NewRelayOptions();
  nghttp2_session_client_new2(&session_, cb, static_cast<Http2Connection*>(this), option);
  nghttp2_option_del(option);
  nghttp2_session_callbacks_del(cb);

  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kStreamWindow},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);
  Start();
}

UpstreamConnection::~UpstreamConnection() = default;

int32_t UpstreamConnection::Submit(const Headers& headers, std::shared_ptr<UpstreamStream> stream,
                                   bool end_stream) {
  if (!accepting()) return NGHTTP2_ERR_START_STREAM_NOT_ALLOWED;
  auto nv = ToNv(headers);
  nghttp2_data_provider provider{};
  provider.read_callback = ReadRequestBody;
  int32_t id = nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(),
                                      end_stream ? nullptr : &provider, nullptr);
  if (id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) draining_ = true;
  if (id < 0) return id;
  streams_.emplace(id, std::move(stream));
  ScheduleFlush();
  return id;
}

void UpstreamConnection::Cancel(int32_t stream_id, uint32_t error_code) {
  if (streams_.erase(stream_id) == 0) return;
  ResetStream(stream_id, error_code);
  CloseIfDrained();
}

void UpstreamConnection::CloseIfDrained() {
  if (draining_ && streams_.empty()) Close("drained");
}

std::shared_ptr<UpstreamStream> UpstreamConnection::Find(int32_t stream_id) {
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? nullptr : it->second;
}

void UpstreamConnection::OnClosed(const std::string& reason) {
  draining_ = true;
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [id, stream] : streams) stream->OnUpstreamClosed(NGHTTP2_INTERNAL_ERROR, reason);
}

int UpstreamConnection::OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
  auto* self = Self(user_data);
  switch (frame->hd.type) {
    case NGHTTP2_HEADERS: {
      auto stream = self->Find(frame->hd.stream_id);
      if (!stream) break;
      bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
      if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE) {
        stream->OnResponseHeaders(self->TakeHeaders(), end);
      } else if (end) {
        stream->OnResponseTrailers(self->TakeHeaders());
      }
      break;
    }
    case NGHTTP2_GOAWAY:
      // Calls above last_stream_id are refused through OnStreamClose; the rest finish here.
      self->draining_ = true;
      spdlog::debug("runtime sent GOAWAY conn={} last_stream={} code={}", self->name(),
                    frame->goaway.last_stream_id, frame->goaway.error_code);
      break;
    case NGHTTP2_PING:
      if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) self->DeferPingAck(frame->ping.opaque_data);
      break;
    default:
      break;
  }
  return 0;
}

int UpstreamConnection::OnDataChunk(nghttp2_session*, uint8_t, int32_t stream_id,
                                    const uint8_t* data, size_t len, void* user_data) {
  auto* self = Self(user_data);
  auto stream = self->Find(stream_id);
  if (!stream) {
    self->Consume(stream_id, len);  // nobody will pass it on: give the window back now
    return 0;
  }
  stream->OnResponseData(data, len);
  return 0;
}

int UpstreamConnection::OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code,
                                      void* user_data) {
  auto* self = Self(user_data);
  auto it = self->streams_.find(stream_id);
  if (it == self->streams_.end()) return 0;
  auto stream = std::move(it->second);
  self->streams_.erase(it);
  self->CloseIfDrained();
  stream->OnUpstreamClosed(error_code, error_code == NGHTTP2_NO_ERROR
                                           ? std::string()
                                           : std::string("runtime reset the stream: ") +
                                                 nghttp2_http2_strerror(error_code));
  return 0;
}

ssize_t UpstreamConnection::ReadRequestBody(nghttp2_session*, int32_t stream_id, uint8_t* buf,
                                            size_t length, uint32_t* data_flags,
                                            nghttp2_data_source*, void* user_data) {
  auto stream = Self(user_data)->Find(stream_id);
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
