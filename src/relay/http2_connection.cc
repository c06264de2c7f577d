#include "relay/http2_connection.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

namespace shim::relay {

namespace {
// Stop taking bytes from data sources while this much is waiting for the socket: the calls then
// keep them, and the peers' windows do the rest.
constexpr size_t kMaxPendingOutput = 256 * 1024;
// Output that piles up anyway (answers to a peer's PINGs, SETTINGS and requests while it does not
// read): past this the peer is misbehaving and the connection is closed.
constexpr size_t kMaxOutputBacklog = 4 * 1024 * 1024;
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kFrameHeaderBytes = 9;
// The largest frame either side sends or accepts: the protocol's default, never raised.
constexpr uint32_t kMaxFrame = 16384;
// A header block as received (HEADERS and CONTINUATION together), and the CONTINUATION frames
// it may take: gRPC metadata is a few hundred bytes; the bounds keep a peer from growing memory
// or spending the loop without end. The decoded bound is kMaxHeaderList (http2_connection.h),
// which both peers are told in SETTINGS.
constexpr size_t kMaxHeaderBlock = 1024 * 1024;
constexpr size_t kMaxContinuations = 128;
constexpr size_t kMaxPingAcksHeld = 64;
constexpr int32_t kDefaultWindow = 65535;
constexpr int32_t kMaxWindow = 0x7fffffff;
constexpr char kClientPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr size_t kClientPrefaceBytes = sizeof kClientPreface - 1;

uint32_t Read32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
void PutFrameHeader(char* h, size_t length, uint8_t type, uint8_t flags, int32_t stream_id) {
  h[0] = static_cast<char>(length >> 16);
  h[1] = static_cast<char>(length >> 8);
  h[2] = static_cast<char>(length);
  h[3] = static_cast<char>(type);
  h[4] = static_cast<char>(flags);
  h[5] = static_cast<char>(stream_id >> 24);
  h[6] = static_cast<char>(stream_id >> 16);
  h[7] = static_cast<char>(stream_id >> 8);
  h[8] = static_cast<char>(stream_id);
}
void Append32(std::string& out, uint32_t v) {
  char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
               static_cast<char>(v)};
  out.append(b, 4);
}
// Strips the padding of a DATA or HEADERS payload; false when the padding does not fit.
bool Unpad(uint8_t flags, const uint8_t*& payload, size_t& length) {
  if (!(flags & NGHTTP2_FLAG_PADDED)) return true;
  if (length < 1) return false;
  size_t pad = payload[0];
  if (pad >= length) return false;
  payload += 1;
  length -= 1 + pad;
  return true;
}

}  // namespace

Http2Connection::Http2Connection(EventLoop& loop, int fd, std::string name, Role role)
    : loop_(loop), role_(role), fd_(fd), name_(std::move(name)) {}

Http2Connection::~Http2Connection() {
  if (ping_ack_timer_ != 0) loop_.Cancel(ping_ack_timer_);
  if (fd_ >= 0) {
    loop_.Remove(fd_);
    close(fd_);
  }
}

void Http2Connection::Start(const std::vector<std::pair<uint16_t, uint32_t>>& settings) {
  if (role_ == Role::kClient) out_.append(kClientPreface, kClientPrefaceBytes);
  WriteFrameHeader(6 * settings.size(), NGHTTP2_SETTINGS, 0, 0);
  for (const auto& [id, value] : settings) {
    if (id == NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) max_peer_streams_ = value;
    out_.push_back(static_cast<char>(id >> 8));
    out_.push_back(static_cast<char>(id));
    Append32(out_, value);
  }
  ++settings_unacked_;
  WriteWindowUpdate(0, kConnectionWindow - kDefaultWindow);
  conn_recv_window_ = kConnectionWindow;
  loop_.Add(fd_, EPOLLIN, [this](uint32_t events) { OnEvents(events); });
  ScheduleFlush();
}

// --- Input ------------------------------------------------------------------------------------

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
    // Parse() handles every whole frame and leaves an unfinished one in in_ for the next read.
    in_.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
    if (!Parse()) return;
    if (out_.size() - out_head_ > kMaxOutputBacklog) {
      Close("the peer sends requests but does not read the answers");
      return;
    }
    ScheduleFlush();
  } else if (events & (EPOLLERR | EPOLLHUP)) {
    Close("socket error");
    return;
  }
  if (events & EPOLLOUT) Flush();
}

bool Http2Connection::Parse() {
  if (role_ == Role::kServer && !preface_seen_) {
    size_t have = std::min(in_.size() - in_head_, kClientPrefaceBytes);
    if (std::memcmp(in_.data() + in_head_, kClientPreface, have) != 0) {
      Close("not an HTTP/2 client preface");
      return false;
    }
    if (have < kClientPrefaceBytes) return true;
    in_head_ += kClientPrefaceBytes;
    preface_seen_ = true;
  }
  while (!closing_ && in_.size() - in_head_ >= kFrameHeaderBytes) {
    const auto* p = reinterpret_cast<const uint8_t*>(in_.data() + in_head_);
    size_t length = size_t{p[0]} << 16 | size_t{p[1]} << 8 | p[2];
    if (length > kMaxFrame) {
      return Fail(NGHTTP2_FRAME_SIZE_ERROR, "a frame of " + std::to_string(length) + " bytes");
    }
    if (in_.size() - in_head_ < kFrameHeaderBytes + length) break;
    in_head_ += kFrameHeaderBytes + length;
    int32_t stream_id = static_cast<int32_t>(Read32(p + 5) & 0x7fffffff);
    if (!OnFrame(p[3], p[4], stream_id, p + kFrameHeaderBytes, length)) return false;
  }
  if (in_head_ == in_.size()) {
    in_.clear();
    in_head_ = 0;
  } else if (in_head_ > kReadChunk) {
    in_.erase(0, in_head_);
    in_head_ = 0;
  }
  return !closing_;
}

bool Http2Connection::OnFrame(uint8_t type, uint8_t flags, int32_t stream_id,
                              const uint8_t* payload, size_t length) {
  if (block_stream_ != 0 && type != NGHTTP2_CONTINUATION) {
    return Fail(NGHTTP2_PROTOCOL_ERROR, "a header block interrupted by another frame");
  }
  if (!saw_peer_frame_) {
    if (type != NGHTTP2_SETTINGS || (flags & NGHTTP2_FLAG_ACK)) {
      return Fail(NGHTTP2_PROTOCOL_ERROR, "the peer's first frame is not SETTINGS");
    }
    saw_peer_frame_ = true;
    OnPrefaceReceived();
  }
  switch (type) {
    case NGHTTP2_DATA:
      return OnDataFrame(flags, stream_id, payload, length);
    case NGHTTP2_HEADERS:
      return OnHeadersFrame(flags, stream_id, payload, length);
    case NGHTTP2_PRIORITY:
      if (stream_id == 0) return Fail(NGHTTP2_PROTOCOL_ERROR, "PRIORITY on stream 0");
      if (length != 5) return Fail(NGHTTP2_FRAME_SIZE_ERROR, "PRIORITY of the wrong size");
      return true;  // priorities are advice (RFC 9113 5.3): every stream is served as it comes
    case NGHTTP2_RST_STREAM:
      if (stream_id == 0) return Fail(NGHTTP2_PROTOCOL_ERROR, "RST_STREAM on stream 0");
      if (length != 4) return Fail(NGHTTP2_FRAME_SIZE_ERROR, "RST_STREAM of the wrong size");
      if (FindStream(stream_id) != nullptr) CloseStream(stream_id, Read32(payload));
      return true;
    case NGHTTP2_SETTINGS:
      return OnSettings(flags, stream_id, payload, length);
    case NGHTTP2_PUSH_PROMISE:
      return Fail(NGHTTP2_PROTOCOL_ERROR, "PUSH_PROMISE, though push is off");
    case NGHTTP2_PING:
      if (stream_id != 0) return Fail(NGHTTP2_PROTOCOL_ERROR, "PING on a stream");
      if (length != 8) return Fail(NGHTTP2_FRAME_SIZE_ERROR, "PING of the wrong size");
      if (!(flags & NGHTTP2_FLAG_ACK)) DeferPingAck(payload);
      return true;
    case NGHTTP2_GOAWAY:
      if (stream_id != 0) return Fail(NGHTTP2_PROTOCOL_ERROR, "GOAWAY on a stream");
      return OnGoAway(payload, length);
    case NGHTTP2_WINDOW_UPDATE:
      return OnWindowUpdate(stream_id, payload, length);
    case NGHTTP2_CONTINUATION:
      if (block_stream_ == 0 || stream_id != block_stream_) {
        return Fail(NGHTTP2_PROTOCOL_ERROR, "CONTINUATION without a header block");
      }
      if (block_.size() + length > kMaxHeaderBlock || ++block_frames_ > kMaxContinuations) {
        return Fail(NGHTTP2_ENHANCE_YOUR_CALM, "a header block over 1 MiB or 128 frames");
      }
      block_.append(reinterpret_cast<const char*>(payload), length);
      if (flags & NGHTTP2_FLAG_END_HEADERS) {
        std::string block = std::move(block_);
        block_.clear();
        block_stream_ = 0;
        return OnHeaderBlockEnd(stream_id, reinterpret_cast<const uint8_t*>(block.data()),
                                block.size(), block_end_stream_);
      }
      return true;
    default:
      return true;  // extension frames are ignored (RFC 9113 5.5)
  }
}

bool Http2Connection::OnDataFrame(uint8_t flags, int32_t stream_id, const uint8_t* payload,
                                  size_t length) {
  if (stream_id == 0) return Fail(NGHTTP2_PROTOCOL_ERROR, "DATA on stream 0");
  size_t frame_length = length;
  if (!Unpad(flags, payload, length)) return Fail(NGHTTP2_PROTOCOL_ERROR, "bad DATA padding");
  // The whole frame counts against the windows, padding included.
  if (static_cast<int64_t>(frame_length) > conn_recv_window_) {
    return Fail(NGHTTP2_FLOW_CONTROL_ERROR, "DATA beyond the connection's window");
  }
  conn_recv_window_ -= static_cast<int64_t>(frame_length);
  Stream* stream = FindStream(stream_id);
  if (stream == nullptr || stream->remote_closed) {
    bool idle = role_ == Role::kServer ? stream_id > last_peer_stream_ : stream_id >= next_stream_;
    if (stream == nullptr && idle) return Fail(NGHTTP2_PROTOCOL_ERROR, "DATA on an idle stream");
    Consume(0, frame_length);  // a closed stream: nobody will pass it on
    return true;
  }
  if (static_cast<int64_t>(frame_length) > stream->recv_window) {
    return Fail(NGHTTP2_FLOW_CONTROL_ERROR, "DATA beyond the stream's window");
  }
  stream->recv_window -= static_cast<int32_t>(frame_length);
  if (frame_length > length) Consume(stream_id, frame_length - length);  // padding: back now
  if (length > 0) OnData(stream_id, payload, length);
  if (flags & NGHTTP2_FLAG_END_STREAM) {
    stream = FindStream(stream_id);  // the call may have gone meanwhile
    if (stream == nullptr) return !closing_;
    stream->remote_closed = true;
    OnEndStream(stream_id);
    if ((stream = FindStream(stream_id)) != nullptr) MaybeFinish(stream_id, *stream);
  }
  return !closing_;
}

bool Http2Connection::OnHeadersFrame(uint8_t flags, int32_t stream_id, const uint8_t* payload,
                                     size_t length) {
  if (stream_id == 0) return Fail(NGHTTP2_PROTOCOL_ERROR, "HEADERS on stream 0");
  if (!Unpad(flags, payload, length)) return Fail(NGHTTP2_PROTOCOL_ERROR, "bad HEADERS padding");
  if (flags & NGHTTP2_FLAG_PRIORITY) {
    if (length < 5) return Fail(NGHTTP2_FRAME_SIZE_ERROR, "HEADERS too short for its priority");
    payload += 5;
    length -= 5;
  }
  bool end_stream = flags & NGHTTP2_FLAG_END_STREAM;
  if (flags & NGHTTP2_FLAG_END_HEADERS) {
    return OnHeaderBlockEnd(stream_id, payload, length, end_stream);
  }
  block_.assign(reinterpret_cast<const char*>(payload), length);
  block_frames_ = 0;
  block_stream_ = stream_id;
  block_end_stream_ = end_stream;
  return true;
}

bool Http2Connection::OnHeaderBlockEnd(int32_t stream_id, const uint8_t* block, size_t length,
                                       bool end_stream) {
  // Every block is decoded, even one for a stream already gone: HPACK's table is shared by the
  // whole connection.
  size_t list_size;
  if (const char* error = decoder_.Decode(block, length, kMaxHeaderList, decoded_, list_size)) {
    return Fail(NGHTTP2_COMPRESSION_ERROR, std::string("header block: ") + error);
  }
  // The room of a list larger than calls need is given back once the block is handled, so that
  // a connection that once received one does not hold it while idle.
  struct GiveBackLargeRoom {
    Headers& headers;
    size_t list_size;
    ~GiveBackLargeRoom() {
      if (list_size > kKeptHeaderListRoom) Headers().swap(headers);
    }
  } give_back{decoded_, list_size};

  Stream* stream = FindStream(stream_id);
  if (list_size > kMaxHeaderList) {
    // Over what SETTINGS_MAX_HEADER_LIST_SIZE announced: that call fails, the connection and
    // the other calls on it go on.
    bool new_stream = role_ == Role::kServer && stream == nullptr && stream_id % 2 == 1 &&
                      stream_id > last_peer_stream_;
    if (new_stream) {
      last_peer_stream_ = stream_id;
      WriteRstStream(stream_id, NGHTTP2_ENHANCE_YOUR_CALM);
      ScheduleFlush();
    } else if (stream != nullptr) {
      ResetStream(stream_id, NGHTTP2_ENHANCE_YOUR_CALM);
    }
    return true;
  }
  if (stream == nullptr) {
    if (role_ == Role::kClient) {
      if (stream_id % 2 == 0 || stream_id >= next_stream_) {
        return Fail(NGHTTP2_PROTOCOL_ERROR, "HEADERS on a stream the shim never opened");
      }
      return true;  // a stream the shim reset: its answer is dropped
    }
    if (stream_id % 2 == 0) return Fail(NGHTTP2_PROTOCOL_ERROR, "a client stream with an even id");
    if (stream_id <= last_peer_stream_) return true;  // closed: trailers after a reset, say
    last_peer_stream_ = stream_id;
    if (goaway_sent_ || streams_.size() >= max_peer_streams_) {
      WriteRstStream(stream_id, NGHTTP2_REFUSED_STREAM);
      ScheduleFlush();
      return true;
    }
    Stream& opened = NewStream(stream_id);
    opened.send_window = peer_initial_window_;
    opened.recv_window = kStreamWindow;
    opened.remote_closed = end_stream;
    opened.headers_received = true;
    OnHeaderBlock(stream_id, true, decoded_, end_stream);
  } else {
    if (stream->headers_waiting) {
      return Fail(NGHTTP2_PROTOCOL_ERROR, "HEADERS on a stream the shim has not opened yet");
    }
    if (stream->remote_closed) return true;  // after END_STREAM: nothing more to pass on
    bool first = !stream->headers_received;
    stream->headers_received = true;
    if (end_stream) stream->remote_closed = true;
    OnHeaderBlock(stream_id, first, decoded_, end_stream);
  }
  if (end_stream && (stream = FindStream(stream_id)) != nullptr) MaybeFinish(stream_id, *stream);
  return !closing_;
}

bool Http2Connection::OnSettings(uint8_t flags, int32_t stream_id, const uint8_t* payload,
                                 size_t length) {
  if (stream_id != 0) return Fail(NGHTTP2_PROTOCOL_ERROR, "SETTINGS on a stream");
  if (flags & NGHTTP2_FLAG_ACK) {
    if (length != 0) return Fail(NGHTTP2_FRAME_SIZE_ERROR, "SETTINGS ACK with a payload");
    if (settings_unacked_ > 0) --settings_unacked_;
    return true;
  }
  if (length % 6 != 0) return Fail(NGHTTP2_FRAME_SIZE_ERROR, "SETTINGS of the wrong size");
  // The streams' windows move once per frame, by the last value: a frame repeating the setting
  // thousands of times costs no more than one.
  int32_t initial_window = peer_initial_window_;
  for (size_t i = 0; i < length; i += 6) {
    uint16_t id = static_cast<uint16_t>(payload[i] << 8 | payload[i + 1]);
    uint32_t value = Read32(payload + i + 2);
    switch (id) {
      case NGHTTP2_SETTINGS_HEADER_TABLE_SIZE:
        table_size_update_due_ = true;  // see WriteHeaders
        break;
      case NGHTTP2_SETTINGS_ENABLE_PUSH:
        if (value > 1) return Fail(NGHTTP2_PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH over 1");
        break;
      case NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS:
        peer_max_streams_ = value;
        break;
      case NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE:
        if (value > static_cast<uint32_t>(kMaxWindow)) {
          return Fail(NGHTTP2_FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1");
        }
        initial_window = static_cast<int32_t>(value);
        break;
      case NGHTTP2_SETTINGS_MAX_FRAME_SIZE:
        if (value < 16384 || value > 16777215) {
          return Fail(NGHTTP2_PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range");
        }
        peer_max_frame_ = value;
        break;
      default:
        break;  // unknown settings are ignored (RFC 9113 6.5.2)
    }
  }
  if (initial_window != peer_initial_window_) {
    int64_t delta = int64_t{initial_window} - peer_initial_window_;
    peer_initial_window_ = initial_window;
    for (auto& [id, stream] : streams_) {
      int64_t window = stream.send_window + delta;
      if (window > kMaxWindow) {
        return Fail(NGHTTP2_FLOW_CONTROL_ERROR, "a stream's window over 2^31-1");
      }
      stream.send_window = static_cast<int32_t>(window);
      if (stream.send_window > 0) Queue(id, stream);
    }
  }
  WriteFrameHeader(0, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0);
  ScheduleFlush();
  return true;
}

bool Http2Connection::OnWindowUpdate(int32_t stream_id, const uint8_t* payload, size_t length) {
  if (length != 4) return Fail(NGHTTP2_FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size");
  uint32_t increment = Read32(payload) & 0x7fffffff;
  if (stream_id == 0) {
    if (increment == 0) return Fail(NGHTTP2_PROTOCOL_ERROR, "WINDOW_UPDATE of 0");
    conn_send_window_ += increment;
    if (conn_send_window_ > kMaxWindow) {
      return Fail(NGHTTP2_FLOW_CONTROL_ERROR, "the connection's window over 2^31-1");
    }
    if (!ready_.empty()) ScheduleFlush();
    return true;
  }
  Stream* stream = FindStream(stream_id);
  if (stream == nullptr) return true;
  if (increment == 0 || int64_t{stream->send_window} + increment > kMaxWindow) {
    ResetStream(stream_id, increment == 0 ? NGHTTP2_PROTOCOL_ERROR : NGHTTP2_FLOW_CONTROL_ERROR);
    return true;
  }
  stream->send_window += static_cast<int32_t>(increment);
  Queue(stream_id, *stream);
  return true;
}

bool Http2Connection::OnGoAway(const uint8_t* payload, size_t length) {
  if (length < 8) return Fail(NGHTTP2_FRAME_SIZE_ERROR, "GOAWAY too short");
  auto last_stream = static_cast<int32_t>(Read32(payload) & 0x7fffffff);
  uint32_t code = Read32(payload + 4);
  peer_goaway_ = true;
  OnPeerGoAway(last_stream, code);
  if (role_ == Role::kClient) {
    // Streams above the last one the peer took were never processed, and requests still waiting
    // for the peer's stream limit may not be opened after a GOAWAY (RFC 9113 6.8): all of them
    // are refused, so they may be retried elsewhere. A stream already answered is not.
    std::vector<int32_t> refused;
    for (const auto& [id, stream] : streams_) {
      if (stream.headers_waiting || (id > last_stream && !stream.headers_received)) {
        refused.push_back(id);
      }
    }
    std::sort(refused.begin(), refused.end());
    for (int32_t id : refused) CloseStream(id, NGHTTP2_REFUSED_STREAM);
  }
  ScheduleFlush();
  return !closing_;
}

void Http2Connection::OnPeerGoAway(int32_t, uint32_t) {}
void Http2Connection::OnPrefaceReceived() {}

bool Http2Connection::Fail(uint32_t code, const std::string& reason) {
  if (closing_) return false;
  SendGoAway(code);
  // One attempt to tell the peer why; the connection ends either way.
  if (out_.size() > out_head_) {
    [[maybe_unused]] ssize_t n =
        send(fd_, out_.data() + out_head_, out_.size() - out_head_, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  Close("HTTP/2 error: " + reason);
  return false;
}

// --- Streams ----------------------------------------------------------------------------------

Http2Connection::Stream* Http2Connection::FindStream(int32_t stream_id) {
  if (stream_id == found_id_) return found_;
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) return nullptr;
  found_id_ = stream_id;
  found_ = &it->second;
  return found_;
}

Http2Connection::Stream& Http2Connection::NewStream(int32_t stream_id) {
  if (spare_streams_.empty()) return streams_[stream_id];
  StreamMap::node_type node = std::move(spare_streams_.back());
  spare_streams_.pop_back();
  node.key() = stream_id;
  return streams_.insert(std::move(node)).position->second;
}

void Http2Connection::ForgetStream(StreamMap::iterator it) {
  if (it->second.handler) --attached_;
  if (it->first == found_id_) {
    found_id_ = 0;
    found_ = nullptr;
  }
  StreamMap::node_type node = streams_.extract(it);
  if (spare_streams_.size() < kSpareStreams) {
    Headers trailers = std::move(node.mapped().trailers);
    trailers.clear();
    node.mapped() = Stream{};
    node.mapped().trailers = std::move(trailers);
    spare_streams_.push_back(std::move(node));
  }
}

void Http2Connection::Attach(int32_t stream_id, std::shared_ptr<StreamHandler> handler) {
  Stream* stream = FindStream(stream_id);
  if (stream == nullptr) return;
  if (!stream->handler) ++attached_;
  stream->handler = std::move(handler);
}

std::shared_ptr<StreamHandler> Http2Connection::HandlerOf(int32_t stream_id) {
  Stream* stream = FindStream(stream_id);
  return stream == nullptr ? nullptr : stream->handler;
}

std::shared_ptr<StreamHandler> Http2Connection::Detach(int32_t stream_id) {
  Stream* stream = FindStream(stream_id);
  if (stream == nullptr || !stream->handler) return nullptr;
  --attached_;
  return std::move(stream->handler);
}

int32_t Http2Connection::OpenStream(const Headers& headers, bool end_stream) {
  if (next_stream_ < 0 || next_stream_ > kMaxWindow - 2) return -1;  // ids ran out
  int32_t id = next_stream_;
  next_stream_ += 2;
  Stream& stream = NewStream(id);
  stream.send_window = peer_initial_window_;
  stream.recv_window = kStreamWindow;
  stream.local_closed = end_stream;
  stream.has_body = !end_stream;
  if (!waiting_opens_.empty() || local_streams_ >= peer_max_streams_) {
    stream.headers_waiting = true;
    stream.request_headers = headers;
    waiting_opens_.push_back(id);
    return id;
  }
  ++local_streams_;
  WriteHeaders(id, headers, end_stream);
  if (stream.has_body) Queue(id, stream);
  ScheduleFlush();
  return id;
}

void Http2Connection::SendWaitingHeaders() {
  while (!peer_goaway_ && !waiting_opens_.empty() && local_streams_ < peer_max_streams_) {
    int32_t id = waiting_opens_.front();
    waiting_opens_.pop_front();
    Stream* stream = FindStream(id);
    if (stream == nullptr || stream->finishing) continue;
    stream->headers_waiting = false;
    ++local_streams_;
    Headers headers = std::move(stream->request_headers);
    WriteHeaders(id, headers, stream->local_closed);
    if (stream->has_body) Queue(id, *stream);
  }
}

void Http2Connection::SendHeaders(int32_t stream_id, const Headers& headers, bool end_stream,
                                  bool has_body) {
  if (closing_) return;
  Stream* stream = FindStream(stream_id);
  if (stream == nullptr || stream->local_closed) return;
  WriteHeaders(stream_id, headers, end_stream);
  if (end_stream) {
    stream->local_closed = true;
    MaybeFinish(stream_id, *stream);
  } else if (has_body) {
    stream->has_body = true;
    stream->deferred = false;
    Queue(stream_id, *stream);
  }
  ScheduleFlush();
}

void Http2Connection::SendTrailers(int32_t stream_id, const Headers& trailers) {
  if (Stream* stream = FindStream(stream_id)) {
    stream->trailers.assign(trailers.begin(), trailers.end());
  }
}

void Http2Connection::Resume(int32_t stream_id) {
  if (closing_) return;
  Stream* stream = FindStream(stream_id);
  if (stream == nullptr || !stream->has_body) return;
  stream->deferred = false;
  Queue(stream_id, *stream);
}

void Http2Connection::Queue(int32_t stream_id, Stream& stream) {
  if (stream.queued || stream.deferred || !stream.has_body || stream.local_closed ||
      stream.headers_waiting) {
    return;
  }
  stream.queued = true;
  ready_.push_back(stream_id);
  ScheduleFlush();
}

void Http2Connection::MaybeFinish(int32_t stream_id, Stream& stream) {
  if (!stream.local_closed) return;
  if (!stream.remote_closed) {
    if (role_ == Role::kClient) return;  // the request goes on until it ends
    // A server that answered before the request ended asks the client to stop sending
    // (RFC 9113 8.1); the stream is then over on both sides.
    WriteRstStream(stream_id, NGHTTP2_NO_ERROR);
    stream.remote_closed = true;
  }
  if (stream.finishing) return;
  // The close is reported once the turn's frames are out (Flush), as a call may still be
  // handing its object to the connection when its last frame is sent.
  stream.finishing = true;
  finished_.push_back({stream_id, NGHTTP2_NO_ERROR});
  ScheduleFlush();
}

void Http2Connection::CloseStream(int32_t stream_id, uint32_t error_code) {
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) return;
  if (role_ == Role::kClient && !it->second.headers_waiting) --local_streams_;
  std::shared_ptr<StreamHandler> handler = std::move(it->second.handler);
  if (handler) --attached_;
  ForgetStream(it);
  OnStreamClosed(stream_id, std::move(handler), error_code);
  if (role_ == Role::kClient && !waiting_opens_.empty()) ScheduleFlush();
}

void Http2Connection::ResetStream(int32_t stream_id, uint32_t error_code) {
  if (closing_) return;
  Stream* stream = FindStream(stream_id);
  if (stream == nullptr || stream->finishing) return;
  if (!stream->headers_waiting) WriteRstStream(stream_id, error_code);  // else never seen
  stream->has_body = false;
  stream->local_closed = stream->remote_closed = true;
  stream->finishing = true;
  finished_.push_back({stream_id, error_code});
  ScheduleFlush();
}

void Http2Connection::Consume(int32_t stream_id, size_t n) {
  if (n == 0 || closing_) return;
  // Credit goes back in WINDOW_UPDATEs of half a window at a time: a unary call's few hundred
  // bytes never cost one.
  conn_recv_consumed_ += n;
  if (conn_recv_consumed_ >= static_cast<size_t>(kConnectionWindow / 2)) {
    WriteWindowUpdate(0, static_cast<uint32_t>(conn_recv_consumed_));
    conn_recv_window_ += static_cast<int64_t>(conn_recv_consumed_);
    conn_recv_consumed_ = 0;
    ScheduleFlush();
  }
  if (stream_id == 0) return;
  Stream* stream = FindStream(stream_id);
  if (stream == nullptr || stream->remote_closed) return;
  stream->recv_consumed += n;
  if (stream->recv_consumed >= static_cast<size_t>(kStreamWindow / 2)) {
    WriteWindowUpdate(stream_id, static_cast<uint32_t>(stream->recv_consumed));
    stream->recv_window += static_cast<int32_t>(stream->recv_consumed);
    stream->recv_consumed = 0;
    ScheduleFlush();
  }
}

// --- Output -----------------------------------------------------------------------------------

void Http2Connection::WriteFrameHeader(size_t length, uint8_t type, uint8_t flags,
                                       int32_t stream_id) {
  char header[kFrameHeaderBytes];
  PutFrameHeader(header, length, type, flags, stream_id);
  out_.append(header, sizeof header);
}

void Http2Connection::WriteWindowUpdate(int32_t stream_id, uint32_t increment) {
  WriteFrameHeader(4, NGHTTP2_WINDOW_UPDATE, 0, stream_id);
  Append32(out_, increment);
}

void Http2Connection::WriteRstStream(int32_t stream_id, uint32_t error_code) {
  WriteFrameHeader(4, NGHTTP2_RST_STREAM, 0, stream_id);
  Append32(out_, error_code);
}

void Http2Connection::WriteHeaders(int32_t stream_id, const Headers& headers, bool end_stream) {
  // Encoded straight into the output after room for the frame header; a block larger than a
  // frame (never seen from gRPC) is moved out and split into CONTINUATION frames.
  size_t start = out_.size();
  out_.resize(start + kFrameHeaderBytes);
  if (table_size_update_due_) {
    // "Dynamic table size 0" (RFC 7541 6.3): the encoder never uses the table, and says so at
    // the start and after each SETTINGS_HEADER_TABLE_SIZE, which a decoder may insist on
    // hearing acknowledged this way (4.2).
    out_.push_back('\x20');
    table_size_update_due_ = false;
  }
  EncodeHeaderBlock(headers, out_);
  size_t length = out_.size() - start - kFrameHeaderBytes;
  uint8_t end_flag = end_stream ? NGHTTP2_FLAG_END_STREAM : 0;
  if (length <= kMaxFrame) {
    PutFrameHeader(out_.data() + start, length, NGHTTP2_HEADERS,
                   end_flag | NGHTTP2_FLAG_END_HEADERS, stream_id);
    return;
  }
  std::string block = out_.substr(start + kFrameHeaderBytes);
  out_.resize(start);
  for (size_t offset = 0; offset < length; offset += kMaxFrame) {
    size_t piece = std::min<size_t>(kMaxFrame, length - offset);
    bool last = offset + piece == length;
    uint8_t type = offset == 0 ? NGHTTP2_HEADERS : NGHTTP2_CONTINUATION;
    uint8_t flags = (offset == 0 ? end_flag : 0) | (last ? NGHTTP2_FLAG_END_HEADERS : 0);
    WriteFrameHeader(piece, type, flags, stream_id);
    out_.append(block, offset, piece);
  }
}

void Http2Connection::SendGoAway(uint32_t error_code) {
  if (goaway_sent_ || closing_) return;
  goaway_sent_ = true;
  WriteFrameHeader(8, NGHTTP2_GOAWAY, 0, 0);
  Append32(out_, static_cast<uint32_t>(last_peer_stream_));
  Append32(out_, error_code);
  ScheduleFlush();
}

void Http2Connection::DeferPingAck(const uint8_t* opaque) {
  std::array<uint8_t, 8> data;
  std::memcpy(data.data(), opaque, data.size());
  ping_acks_.push_back(data);
  if (ping_acks_.size() >= kMaxPingAcksHeld) {
    SubmitPingAcks();
    ScheduleFlush();
    return;
  }
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
    WriteFrameHeader(8, NGHTTP2_PING, NGHTTP2_FLAG_ACK, 0);
    out_.append(reinterpret_cast<const char*>(data.data()), data.size());
  }
  ping_acks_.clear();
}

void Http2Connection::SendData() {
  // Each queued stream once per pass, even with the connection's window at 0: a stream whose
  // body is sent may still owe its end (trailers, END_STREAM), which no window holds back.
  for (size_t visits = ready_.size(); visits > 0 && !ready_.empty(); --visits) {
    if (out_.size() - out_head_ >= kMaxPendingOutput) return;
    int32_t id = ready_.front();
    ready_.pop_front();
    Stream* stream = FindStream(id);
    if (stream == nullptr) continue;  // closed since it was queued
    stream->queued = false;
    if (SendDataOf(id, *stream)) return;  // stopped by the batch limit: go on next flush
  }
}

bool Http2Connection::SendDataOf(int32_t stream_id, Stream& stream) {
  // Bytes are read into a scratch buffer, not into the output: a data source may write other
  // frames (WINDOW_UPDATE) to this connection while it runs.
  static uint8_t scratch[kMaxFrame];
  Stream* s = &stream;
  while (s->has_body && !s->deferred && !s->local_closed) {
    if (out_.size() - out_head_ >= kMaxPendingOutput) {
      s->queued = true;
      ready_.push_front(stream_id);
      return true;
    }
    // With a window of 0 the source is still asked, for nothing: its end (an empty DATA with
    // END_STREAM, or trailers) is not flow-controlled and must not wait for a WINDOW_UPDATE the
    // peer has no reason to send.
    int64_t window = std::min<int64_t>(s->send_window, conn_send_window_);
    size_t max = window <= 0
                     ? 0
                     : std::min<size_t>({static_cast<size_t>(window), kMaxFrame, peer_max_frame_});
    uint32_t data_flags = 0;
    ssize_t n = ReadBody(stream_id, scratch, max, &data_flags);
    s = FindStream(stream_id);
    if (s == nullptr) return false;
    if (n == NGHTTP2_ERR_DEFERRED) {
      s->deferred = true;
      return false;
    }
    if (n < 0 || static_cast<size_t>(n) > max) {
      ResetStream(stream_id, NGHTTP2_INTERNAL_ERROR);
      return false;
    }
    bool eof = data_flags & NGHTTP2_DATA_FLAG_EOF;
    // No trailers (or an empty block) end the stream on the last DATA instead.
    bool trailers_follow =
        eof && (data_flags & NGHTTP2_DATA_FLAG_NO_END_STREAM) && !s->trailers.empty();
    if (n > 0 || (eof && !trailers_follow)) {
      WriteFrameHeader(static_cast<size_t>(n), NGHTTP2_DATA,
                       eof && !trailers_follow ? NGHTTP2_FLAG_END_STREAM : 0, stream_id);
      out_.append(reinterpret_cast<const char*>(scratch), static_cast<size_t>(n));
      s->send_window -= static_cast<int32_t>(n);
      conn_send_window_ -= n;
    }
    if (eof) {
      s->has_body = false;
      if (trailers_follow) {
        WriteHeaders(stream_id, s->trailers, true);
        s->trailers.clear();
      }
      s->local_closed = true;
      MaybeFinish(stream_id, *s);
      return false;
    }
    if (n == 0) {
      if (max > 0) {
        s->deferred = true;  // nothing and no end: wait for Resume
      } else if (conn_send_window_ <= 0 && s->send_window > 0) {
        s->queued = true;  // in line for when the connection's window opens
        ready_.push_back(stream_id);
      }  // else the stream's WINDOW_UPDATE queues it again
      return false;
    }
  }
  return false;
}

void Http2Connection::ScheduleFlush() {
  if (flush_scheduled_ || closing_) return;
  flush_scheduled_ = true;
  loop_.Defer([this] {
    flush_scheduled_ = false;
    Flush();
  });
}

void Http2Connection::Flush() {
  if (closing_) return;
  if (role_ == Role::kClient) SendWaitingHeaders();
  SendData();
  // Owed ACKs go with whatever else leaves now.
  if (!ping_acks_.empty() && out_.size() > out_head_) SubmitPingAcks();
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
  // Streams whose last frame is written now are reported closed.
  while (!finished_.empty()) {
    // A copy, as closing a stream may finish others; the vector keeps its room for the next turn.
    finishing_now_.swap(finished_);
    for (auto [id, code] : finishing_now_) CloseStream(id, code);
    finishing_now_.clear();
    if (closing_) return;
  }
  bool socket_full = !out_.empty();
  if (socket_full != want_out_) {
    want_out_ = socket_full;
    loop_.Modify(fd_, EPOLLIN | (socket_full ? EPOLLOUT : 0u));
  }
  if (socket_full) return;  // EPOLLOUT brings us back
  if (!ready_.empty() && conn_send_window_ > 0) {
    ScheduleFlush();  // the batch limit stopped us, not the socket: go on this turn
  } else if ((goaway_sent_ || peer_goaway_) && streams_.empty()) {
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
  std::vector<std::shared_ptr<StreamHandler>> handlers;
  handlers.reserve(attached_);
  for (auto& [id, stream] : streams_) {
    if (stream.handler) handlers.push_back(std::move(stream.handler));
  }
  streams_.clear();
  spare_streams_.clear();
  found_id_ = 0;
  found_ = nullptr;
  attached_ = 0;
  OnClosed(close_reason_, std::move(handlers));
  if (on_closed_) on_closed_(this);  // may destroy this object: nothing after
}

}  // namespace shim::relay
