// What the kubelet side and the runtime side of the relay share: one socket and the HTTP/2 of
// it. The relay speaks HTTP/2 itself (RFC 9113; HPACK in relay/hpack.h): a gRPC call is three
// header blocks and two small DATA frames, and a general session's stream scheduling, frame
// queue and per-frame allocations cost more than the call's own bytes (docs/performance.md). Input
// is parsed as it arrives; output is gathered into one buffer and written once per loop turn
// (batching halves the system calls of a call).
//
// What it keeps of the protocol: the preface, SETTINGS (acknowledged, and the peer's window,
// frame size and stream limit obeyed), flow control on both levels in both directions, PING
// answers, GOAWAY, RST_STREAM, CONTINUATION, padding; any violation of the peer ends the
// connection with GOAWAY naming the error. What it drops: priorities (ignored, as RFC 9113
// allows) and server push (refused in SETTINGS).
//
// Loop thread only. Owned by its server or pool; Close() tears down at the end of the turn,
// never inside a frame handler.
#pragma once

#include <nghttp2/nghttp2.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "relay/event_loop.h"
#include "relay/grpc_wire.h"
#include "relay/hpack.h"
#include "relay/streams.h"

namespace shim::relay {

// Flow-control windows: how much a peer may send ahead before the relay has passed it on.
// They bound what one stream (kStreamWindow) and one connection (kConnectionWindow) can make
// the shim buffer when the other side reads slowly.
inline constexpr int32_t kStreamWindow = 1 << 20;
inline constexpr int32_t kConnectionWindow = 8 << 20;
// The largest header list (RFC 9113 sizes) a peer may send, announced in SETTINGS; a larger one
// fails its call only.
inline constexpr uint32_t kMaxHeaderList = 1 << 20;

// What a data source returns (nghttp2's conventions, which the calls were written against):
// a byte count with NGHTTP2_DATA_FLAG_EOF set in `data_flags` at the end (and
// NGHTTP2_DATA_FLAG_NO_END_STREAM when trailers follow), or NGHTTP2_ERR_DEFERRED when nothing
// is buffered yet (Resume() brings the stream back).

class Http2Connection {
 public:
  using ClosedCallback = std::function<void(Http2Connection*)>;
  enum class Role { kClient, kServer };

  Http2Connection(EventLoop& loop, int fd, std::string name, Role role);
  virtual ~Http2Connection();
  Http2Connection(const Http2Connection&) = delete;
  Http2Connection& operator=(const Http2Connection&) = delete;

  // Output is written at the end of the current turn.
  void ScheduleFlush();
  // Closes the connection at the end of the turn; streams hear of it through OnClosed().
  void Close(const std::string& reason);
  bool closing() const { return closing_; }
  const std::string& name() const { return name_; }

  // Called once, after the connection is torn down, so its owner can drop it.
  void set_on_closed(ClosedCallback callback) { on_closed_ = std::move(callback); }

  // Returns the stream's and connection's flow-control credit for `n` bytes that have left the
  // shim. With stream_id 0 only the connection's.
  void Consume(int32_t stream_id, size_t n);
  // A deferred data source has bytes again.
  void Resume(int32_t stream_id);
  // Sends RST_STREAM; OnStreamClosed(error_code) follows once it is written.
  void ResetStream(int32_t stream_id, uint32_t error_code);
  // Streams with a handler attached: the calls in flight on this connection.
  size_t active_streams() const { return attached_; }

 protected:
  // Subclasses call Start() once their construction is done.
  void Start(const std::vector<std::pair<uint16_t, uint32_t>>& settings);

  // A complete header block from the peer: `first` for a stream's first block (a request for a
  // server, the response headers for a client), later ones are trailers. `headers` is the
  // connection's decoding buffer, valid during the call only: what is kept is copied.
  virtual void OnHeaderBlock(int32_t stream_id, bool first, const Headers& headers,
                             bool end_stream) = 0;
  // DATA of an open stream.
  virtual void OnData(int32_t stream_id, const uint8_t* data, size_t n) = 0;
  // END_STREAM on a DATA frame.
  virtual void OnEndStream(int32_t stream_id) = 0;
  // The stream is closed on both sides (NO_ERROR), reset by the peer (its code), refused by its
  // GOAWAY (REFUSED_STREAM) or reset by the shim because its data source failed. `handler` is
  // what was attached to it, if it still was.
  virtual void OnStreamClosed(int32_t stream_id, std::shared_ptr<StreamHandler> handler,
                              uint32_t error_code) = 0;
  // The data source of a stream that has a body to send.
  virtual ssize_t ReadBody(int32_t stream_id, uint8_t* buf, size_t length,
                           uint32_t* data_flags) = 0;
  virtual void OnPeerGoAway(int32_t last_stream_id, uint32_t error_code);
  // The peer's first SETTINGS arrived (after the preface, for a server).
  virtual void OnPrefaceReceived();
  // The connection is gone; `handlers` are those of the streams still open. Runs once.
  virtual void OnClosed(const std::string& reason,
                        std::vector<std::shared_ptr<StreamHandler>> handlers) = 0;

  // The call a stream belongs to. Each stream holds one handler, so the connection needs no
  // table of calls of its own. Attach on a stream that is gone does nothing.
  void Attach(int32_t stream_id, std::shared_ptr<StreamHandler> handler);
  // The stream's handler, or nullptr; a reference for the length of a call into it.
  std::shared_ptr<StreamHandler> HandlerOf(int32_t stream_id);
  // Takes the handler off the stream: no more calls into it.
  std::shared_ptr<StreamHandler> Detach(int32_t stream_id);

  // Opens a stream (client role) with a request header block. Returns the stream id, or -1 when
  // ids ran out. The HEADERS wait while the peer's stream limit is reached.
  int32_t OpenStream(const Headers& headers, bool end_stream);
  // A header block on a stream: response headers (server), trailers (with end_stream).
  // `has_body`: the stream's data source is read next (ReadBody).
  void SendHeaders(int32_t stream_id, const Headers& headers, bool end_stream, bool has_body);
  // Trailers, sent after the stream's last DATA: ReadBody then returns EOF | NO_END_STREAM.
  void SendTrailers(int32_t stream_id, const Headers& trailers);
  void SendGoAway(uint32_t error_code);

  EventLoop& loop_;

 private:
  struct Stream {
    int32_t send_window = 0;
    int32_t recv_window = 0;        // what the peer may still send on it
    size_t recv_consumed = 0;       // passed on, not yet returned in a WINDOW_UPDATE
    bool local_closed = false;      // END_STREAM sent (or to be sent: trailers pending)
    bool remote_closed = false;     // END_STREAM received
    bool headers_received = false;  // the peer's first header block came
    bool has_body = false;          // the data source is to be read
    bool deferred = false;          // the data source said "nothing yet"
    bool queued = false;            // in ready_
    bool headers_waiting = false;   // a request over the peer's stream limit, not sent yet
    bool finishing = false;         // in finished_
    Headers trailers;               // sent after the last DATA; its room is kept with the node
    Headers request_headers;        // of a waiting request
    std::shared_ptr<StreamHandler> handler;
  };
  using StreamMap = std::unordered_map<int32_t, Stream>;

  void OnEvents(uint32_t events);
  void Flush();
  void TearDown();
  void SubmitPingAcks();
  void DeferPingAck(const uint8_t* opaque);

  // Input. Each returns false when the connection is over (it then has called Fail or Close).
  bool Parse();
  bool OnFrame(uint8_t type, uint8_t flags, int32_t stream_id, const uint8_t* payload,
               size_t length);
  bool OnDataFrame(uint8_t flags, int32_t stream_id, const uint8_t* payload, size_t length);
  bool OnHeadersFrame(uint8_t flags, int32_t stream_id, const uint8_t* payload, size_t length);
  bool OnHeaderBlockEnd(int32_t stream_id, const uint8_t* block, size_t length, bool end_stream);
  bool OnSettings(uint8_t flags, int32_t stream_id, const uint8_t* payload, size_t length);
  bool OnWindowUpdate(int32_t stream_id, const uint8_t* payload, size_t length);
  bool OnGoAway(const uint8_t* payload, size_t length);
  // A connection error: GOAWAY with `code`, then close.
  bool Fail(uint32_t code, const std::string& reason);

  // Output.
  void WriteFrameHeader(size_t length, uint8_t type, uint8_t flags, int32_t stream_id);
  void WriteHeaders(int32_t stream_id, const Headers& headers, bool end_stream);
  void WriteWindowUpdate(int32_t stream_id, uint32_t increment);
  void WriteRstStream(int32_t stream_id, uint32_t error_code);
  void SendWaitingHeaders();
  void SendData();
  // True when the batch limit stopped it (the stream is queued again).
  bool SendDataOf(int32_t stream_id, Stream& stream);
  void Queue(int32_t stream_id, Stream& stream);
  // Both sides ended: the stream is reported closed after the next write.
  void MaybeFinish(int32_t stream_id, Stream& stream);
  // Forgets the stream and tells the subclass.
  void CloseStream(int32_t stream_id, uint32_t error_code);
  Stream* FindStream(int32_t stream_id);
  // A new stream's entry, from a node kept from an earlier stream when there is one: a stream
  // per call would otherwise cost an allocation.
  Stream& NewStream(int32_t stream_id);
  void ForgetStream(StreamMap::iterator it);

  Role role_;
  int fd_;
  std::string name_;
  std::string in_;  // bytes received, not yet a whole frame
  size_t in_head_ = 0;
  std::string out_;  // serialized frames not yet written
  size_t out_head_ = 0;
  bool preface_seen_ = false;
  bool table_size_update_due_ = true;  // the next header block starts with "table size 0"
  bool saw_peer_frame_ = false;
  bool flush_scheduled_ = false;
  bool want_out_ = false;  // EPOLLOUT registered
  bool closing_ = false;
  bool goaway_sent_ = false;
  bool peer_goaway_ = false;
  std::string close_reason_;
  ClosedCallback on_closed_;

  HpackDecoder decoder_;
  // Every header block is decoded here: the strings' room serves the next block, so a call's
  // headers cost no allocation once the connection has seen one. Not after a list over
  // kKeptHeaderListRoom: that room is given back.
  Headers decoded_;
  static constexpr size_t kKeptHeaderListRoom = 16 * 1024;
  // A header block in pieces (HEADERS without END_HEADERS, then CONTINUATION).
  std::string block_;
  int32_t block_stream_ = 0;  // 0: no block in progress
  size_t block_frames_ = 0;   // CONTINUATION frames so far
  bool block_end_stream_ = false;

  static constexpr size_t kSpareStreams = 16;
  StreamMap streams_;
  // The stream FindStream found last: a frame's handling looks its stream up several times. A
  // map node does not move, so the pointer holds until the stream is forgotten. 0: none.
  int32_t found_id_ = 0;
  Stream* found_ = nullptr;
  std::vector<StreamMap::node_type> spare_streams_;
  size_t attached_ = 0;  // streams with a handler
  // Streams to report closed after the next write, with their codes.
  std::vector<std::pair<int32_t, uint32_t>> finished_;
  std::vector<std::pair<int32_t, uint32_t>> finishing_now_;
  std::deque<int32_t> ready_;          // streams whose data source may have bytes
  std::deque<int32_t> waiting_opens_;  // requests over the peer's stream limit
  int32_t last_peer_stream_ = 0;       // highest stream id the peer opened
  int32_t next_stream_ = 1;            // client role: the next id to open
  size_t local_streams_ = 0;           // client role: streams opened and sent

  // The peer's settings and windows.
  int32_t peer_initial_window_ = 65535;
  uint32_t peer_max_frame_ = 16384;
  uint32_t peer_max_streams_ = UINT32_MAX;
  uint32_t max_peer_streams_ = UINT32_MAX;  // ours: MAX_CONCURRENT_STREAMS in Start()
  int64_t conn_send_window_ = 65535;
  // Ours.
  int64_t conn_recv_window_ = 65535;
  size_t conn_recv_consumed_ = 0;
  uint32_t settings_unacked_ = 0;

  std::vector<std::array<uint8_t, 8>> ping_acks_;  // owed to the peer
  EventLoop::TimerId ping_ack_timer_ = 0;
};

// How long a PING's ACK may wait for other frames to travel with. gRPC peers ping with every
// call (bandwidth estimation); answering at once cost a system call and a wake-up of the peer
// per call.
inline constexpr std::chrono::milliseconds kPingAckDelay{2};

}  // namespace shim::relay
