#include "relay/downstream.h"

#include <spdlog/spdlog.h>

namespace shim::relay {

namespace {
DownstreamConnection* Self(void* user_data) {
  return static_cast<DownstreamConnection*>(static_cast<Http2Connection*>(user_data));
}
// Per connection; gRPC clients queue beyond it rather than fail.
constexpr uint32_t kMaxConcurrentStreams = 1024;
}  // namespace

DownstreamConnection::DownstreamConnection(EventLoop& loop, int fd, std::string name,
                                           StreamFactory factory,
                                           std::chrono::milliseconds preface_timeout)
    : Http2Connection(loop, fd, std::move(name)), factory_(std::move(factory)) {
  nghttp2_session_callbacks* cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, OnBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cb, OnHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, OnFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, OnDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, OnStreamClose);
  nghttp2_option* option = NewRelayOptions();
  nghttp2_session_server_new2(&session_, cb, static_cast<Http2Connection*>(this), option);
  nghttp2_option_del(option);
  nghttp2_session_callbacks_del(cb);

  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, kMaxConcurrentStreams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kStreamWindow},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);
  preface_timer_ = loop_.AddTimer(preface_timeout, [this, preface_timeout] {
    preface_timer_ = 0;
    Close("no HTTP/2 preface within " + std::to_string(preface_timeout.count()) + " ms");
  });
  Start();
}

DownstreamConnection::~DownstreamConnection() {
  if (preface_timer_ != 0) loop_.Cancel(preface_timer_);
}

std::shared_ptr<ServerStream> DownstreamConnection::Find(int32_t stream_id) {
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? nullptr : it->second;
}

void DownstreamConnection::SubmitResponse(int32_t stream_id, const Headers& headers,
                                          bool end_stream) {
  if (closing()) return;
  auto nv = ToNv(headers);
  nghttp2_data_provider provider{};
  provider.read_callback = ReadResponseBody;
  int rv = nghttp2_submit_response(session_, stream_id, nv.data(), nv.size(),
                                   end_stream ? nullptr : &provider);
  if (rv != 0) {
    spdlog::debug("submit response failed conn={} stream={} error={}", name(), stream_id,
                  nghttp2_strerror(rv));
  }
  ScheduleFlush();
}

void DownstreamConnection::SubmitTrailers(int32_t stream_id, const Headers& trailers) {
  if (closing()) return;
  auto nv = ToNv(trailers);
  nghttp2_submit_trailer(session_, stream_id, nv.data(), nv.size());
  ScheduleFlush();
}

void DownstreamConnection::Cancel(int32_t stream_id, uint32_t error_code) {
  if (streams_.erase(stream_id) == 0) return;
  ResetStream(stream_id, error_code);
}

void DownstreamConnection::Shutdown() {
  if (closing()) return;
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                        nullptr, 0);
  ScheduleFlush();
  if (streams_.empty()) Close("shutting down");
}

void DownstreamConnection::OnClosed(const std::string&) {
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [id, stream] : streams) stream->OnDownstreamClosed(NGHTTP2_CANCEL);
}

int DownstreamConnection::OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame,
                                      void* user_data) {
  auto* self = Self(user_data);
  if (self->preface_timer_ != 0) {  // nghttp2 checked the preface before any frame
    self->loop_.Cancel(self->preface_timer_);
    self->preface_timer_ = 0;
  }
  int32_t id = frame->hd.stream_id;
  bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
  switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
      if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        Headers headers = self->TakeHeaders();
        if (FindHeader(headers, ":path") == nullptr) {
          self->ResetStream(id, NGHTTP2_PROTOCOL_ERROR);
          return 0;
        }
        auto stream = self->factory_(*self, id, std::move(headers), end);
        if (stream) self->streams_.emplace(id, std::move(stream));
      } else if (end) {  // request trailers: gRPC has none to carry, only the end
        if (auto stream = self->Find(id)) stream->OnRequestEnd();
      }
      break;
    case NGHTTP2_DATA:
      if (end) {
        if (auto stream = self->Find(id)) stream->OnRequestEnd();
      }
      break;
    case NGHTTP2_PING:
      if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) self->DeferPingAck(frame->ping.opaque_data);
      break;
    default:
      break;
  }
  return 0;
}

int DownstreamConnection::OnDataChunk(nghttp2_session*, uint8_t, int32_t stream_id,
                                      const uint8_t* data, size_t len, void* user_data) {
  auto* self = Self(user_data);
  auto stream = self->Find(stream_id);
  if (!stream) {
    self->Consume(stream_id, len);
    return 0;
  }
  stream->OnRequestData(data, len);
  return 0;
}

int DownstreamConnection::OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code,
                                        void* user_data) {
  auto* self = Self(user_data);
  auto it = self->streams_.find(stream_id);
  if (it != self->streams_.end()) {
    auto stream = std::move(it->second);
    self->streams_.erase(it);
    stream->OnDownstreamClosed(error_code);
  }
  // After GOAWAY the connection ends with its last call.
  if (self->streams_.empty() && nghttp2_session_want_read(self->session_) == 0) {
    self->ScheduleFlush();
  }
  return 0;
}

ssize_t DownstreamConnection::ReadResponseBody(nghttp2_session*, int32_t stream_id, uint8_t* buf,
                                               size_t length, uint32_t* data_flags,
                                               nghttp2_data_source*, void* user_data) {
  auto stream = Self(user_data)->Find(stream_id);
  if (!stream) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  return stream->ReadResponse(buf, length, data_flags);
}

}  // namespace shim::relay
