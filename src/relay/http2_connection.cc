#include "relay/http2_connection.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

namespace shim::relay {

namespace {
// Stop pulling frames out of the session while this much is waiting for the socket: the
// session then keeps them, and the peer's window does the rest.
constexpr size_t kMaxPendingOutput = 256 * 1024;
constexpr size_t kReadChunk = 64 * 1024;
}  // namespace

nghttp2_option* NewRelayOptions() {
  nghttp2_option* option;
  nghttp2_option_new(&option);
  // grpc-go sends :authority equal to the socket path, which nghttp2's HTTP checks reject.
  nghttp2_option_set_no_http_messaging(option, 1);
  nghttp2_option_set_no_auto_window_update(option, 1);
  nghttp2_option_set_no_auto_ping_ack(option, 1);  // see DeferPingAck
  return option;
}

Http2Connection::Http2Connection(EventLoop& loop, int fd, std::string name)
    : loop_(loop), fd_(fd), name_(std::move(name)) {}

void Http2Connection::DeferPingAck(const uint8_t opaque[8]) {
  std::array<uint8_t, 8> data;
  std::memcpy(data.data(), opaque, data.size());
  ping_acks_.push_back(data);
  if (ping_ack_timer_ == 0) {
    ping_ack_timer_ = loop_.AddTimer(kPingAckDelay, [this] {
      ping_ack_timer_ = 0;
      if (ping_acks_.empty()) return;
      SubmitPingAcks();
      Flush();
    });
  }
}

void Http2Connection::SubmitPingAcks() {
  for (const auto& data : ping_acks_) {
    nghttp2_submit_ping(session_, NGHTTP2_FLAG_ACK, data.data());
  }
  ping_acks_.clear();
}

Http2Connection::~Http2Connection() {
  if (ping_ack_timer_ != 0) loop_.Cancel(ping_ack_timer_);
  if (session_ != nullptr) nghttp2_session_del(session_);
  if (fd_ >= 0) {
    loop_.Remove(fd_);
    close(fd_);
  }
}

int Http2Connection::OnBeginHeaders(nghttp2_session*, const nghttp2_frame*, void* user_data) {
  // One allocation for a whole header block (a gRPC request has about ten headers), where
  // growing from empty would reallocate and move the headers four times; the block's headers are
  // taken away with the vector (TakeHeaders), so its room cannot be kept.
  auto* self = static_cast<Http2Connection*>(user_data);
  self->scratch_.clear();
  self->scratch_.reserve(kTypicalHeaderCount);
  return 0;
}

int Http2Connection::OnHeader(nghttp2_session*, const nghttp2_frame*, const uint8_t* name,
                              size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                              void* user_data) {
  static_cast<Http2Connection*>(user_data)->scratch_.push_back(
      {std::string(reinterpret_cast<const char*>(name), namelen),
       std::string(reinterpret_cast<const char*>(value), valuelen)});
  return 0;
}

void Http2Connection::Start() {
  loop_.Add(fd_, EPOLLIN, [this](uint32_t events) { OnEvents(events); });
  ScheduleFlush();
}

void Http2Connection::ScheduleFlush() {
  if (flush_scheduled_ || closing_) return;
  flush_scheduled_ = true;
  loop_.Defer([this] {
    flush_scheduled_ = false;
    Flush();
  });
}

void Http2Connection::Consume(int32_t stream_id, size_t n) {
  if (n == 0 || closing_) return;
  if (stream_id == 0) {
    nghttp2_session_consume_connection(session_, n);
  } else {
    nghttp2_session_consume(session_, stream_id, n);
  }
  ScheduleFlush();
}

void Http2Connection::Resume(int32_t stream_id) {
  if (closing_) return;
  nghttp2_session_resume_data(session_, stream_id);
  ScheduleFlush();
}

void Http2Connection::ResetStream(int32_t stream_id, uint32_t error_code) {
  if (closing_) return;
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, error_code);
  ScheduleFlush();
}

void Http2Connection::OnEvents(uint32_t events) {
  if (closing_) return;
  if (events & EPOLLIN) {
    static uint8_t buf[kReadChunk];  // the loop is single-threaded: one buffer serves all
    ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n == 0) {
      Close("peer closed the connection");
      return;
    }
    if (n < 0) {
      if (errno != EAGAIN && errno != EINTR) Close(std::string("read: ") + std::strerror(errno));
      return;
    }
    ssize_t rv = nghttp2_session_mem_recv(session_, buf, static_cast<size_t>(n));
    if (rv < 0) {
      Close(std::string("HTTP/2 error: ") + nghttp2_strerror(static_cast<int>(rv)));
      return;
    }
    ScheduleFlush();
  } else if (events & (EPOLLERR | EPOLLHUP)) {
    Close("socket error");
    return;
  }
  if (events & EPOLLOUT) Flush();
}

void Http2Connection::Flush() {
  if (closing_) return;
  // Owed ACKs go with whatever else leaves now.
  if (!ping_acks_.empty() && nghttp2_session_want_write(session_)) SubmitPingAcks();
  bool more_in_session = false;
  while (true) {
    if (out_.size() - out_head_ >= kMaxPendingOutput) {
      more_in_session = true;
      break;
    }
    const uint8_t* data;
    ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n < 0) {
      Close(std::string("HTTP/2 error: ") + nghttp2_strerror(static_cast<int>(n)));
      return;
    }
    if (n == 0) break;
    out_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
  while (out_head_ < out_.size()) {
    ssize_t n =
        send(fd_, out_.data() + out_head_, out_.size() - out_head_, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      Close(std::string("write: ") + std::strerror(errno));
      return;
    }
    out_head_ += static_cast<size_t>(n);
  }
  if (out_head_ == out_.size()) {
    out_.clear();
    out_head_ = 0;
  }
  bool socket_full = !out_.empty();
  if (socket_full != want_out_) {
    want_out_ = socket_full;
    loop_.Modify(fd_, EPOLLIN | (socket_full ? EPOLLOUT : 0u));
  }
  if (socket_full) return;  // EPOLLOUT brings us back
  if (more_in_session) {
    ScheduleFlush();  // the batch limit stopped us, not the socket: go on this turn
  } else if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) {
    Close("session finished");
  }
}

void Http2Connection::Close(const std::string& reason) {
  if (closing_) return;
  closing_ = true;
  close_reason_ = reason;
  loop_.Defer([this] { TearDown(); });
}

void Http2Connection::TearDown() {
  spdlog::debug("connection closed conn={} reason=\"{}\"", name_, close_reason_);
  loop_.Remove(fd_);
  close(fd_);
  fd_ = -1;
  OnClosed(close_reason_);
  if (on_closed_) on_closed_(this);  // may destroy this object: nothing after
}

}  // namespace shim::relay
