#include "relay/downstream.h"

#include <spdlog/spdlog.h>

namespace shim::relay {

namespace {
// Per connection; gRPC clients queue beyond it rather than fail.
constexpr uint32_t kMaxConcurrentStreams = 1024;
}  // namespace

DownstreamConnection::DownstreamConnection(EventLoop& loop, int fd, std::string name,
                                           StreamFactory factory,
                                           std::chrono::milliseconds preface_timeout)
    : Http2Connection(loop, fd, std::move(name), Role::kServer), factory_(std::move(factory)) {
  preface_timer_ = loop_.AddTimer(preface_timeout, [this, preface_timeout] {
    preface_timer_ = 0;
    Close("no HTTP/2 preface within " + std::to_string(preface_timeout.count()) + " ms");
  });
  Start({{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, kMaxConcurrentStreams},
         {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kStreamWindow},
         {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, kMaxHeaderList}});
}

DownstreamConnection::~DownstreamConnection() {
  if (preface_timer_ != 0) loop_.Cancel(preface_timer_);
}

std::shared_ptr<ServerStream> DownstreamConnection::Find(int32_t stream_id) {
  // Only ServerStreams are attached here.
  return std::static_pointer_cast<ServerStream>(HandlerOf(stream_id));
}

void DownstreamConnection::SubmitResponse(int32_t stream_id, const Headers& headers,
                                          bool end_stream) {
  SendHeaders(stream_id, headers, end_stream, !end_stream);
}

void DownstreamConnection::SubmitTrailers(int32_t stream_id, const Headers& trailers) {
  SendTrailers(stream_id, trailers);
}

void DownstreamConnection::Cancel(int32_t stream_id, uint32_t error_code) {
  if (!Detach(stream_id)) return;
  ResetStream(stream_id, error_code);
}

void DownstreamConnection::Shutdown() {
  if (closing()) return;
  // The connection closes from Flush once the GOAWAY is written and no call is left.
  SendGoAway(NGHTTP2_NO_ERROR);
}

void DownstreamConnection::OnClosed(const std::string&,
                                    std::vector<std::shared_ptr<StreamHandler>> handlers) {
  for (auto& handler : handlers) {
    static_cast<ServerStream*>(handler.get())->OnDownstreamClosed(NGHTTP2_CANCEL);
  }
}

void DownstreamConnection::OnPrefaceReceived() {
  if (preface_timer_ != 0) {
    loop_.Cancel(preface_timer_);
    preface_timer_ = 0;
  }
}

void DownstreamConnection::OnHeaderBlock(int32_t stream_id, bool first, const Headers& headers,
                                         bool end_stream) {
  if (first) {
    if (FindHeader(headers, ":path") == nullptr) {
      ResetStream(stream_id, NGHTTP2_PROTOCOL_ERROR);
      return;
    }
    auto stream = factory_(*this, stream_id, headers, end_stream);
    if (stream) Attach(stream_id, std::move(stream));
  } else if (end_stream) {  // request trailers: gRPC has none to carry, only the end
    if (auto stream = Find(stream_id)) stream->OnRequestEnd();
  }
}

void DownstreamConnection::OnData(int32_t stream_id, const uint8_t* data, size_t n) {
  auto stream = Find(stream_id);
  if (!stream) {
    Consume(stream_id, n);
    return;
  }
  stream->OnRequestData(data, n);
}

void DownstreamConnection::OnEndStream(int32_t stream_id) {
  if (auto stream = Find(stream_id)) stream->OnRequestEnd();
}

void DownstreamConnection::OnStreamClosed(int32_t, std::shared_ptr<StreamHandler> handler,
                                          uint32_t error_code) {
  if (handler) static_cast<ServerStream*>(handler.get())->OnDownstreamClosed(error_code);
}

ssize_t DownstreamConnection::ReadBody(int32_t stream_id, uint8_t* buf, size_t length,
                                       uint32_t* data_flags) {
  auto stream = Find(stream_id);
  if (!stream) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  return stream->ReadResponse(buf, length, data_flags);
}

}  // namespace shim::relay
