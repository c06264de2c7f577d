// What the kubelet side and the runtime side of the relay share: one socket, one nghttp2
// session, input fed to the session as it arrives, and output gathered from the session and
// written once per loop turn (batching halves the system calls of a call).
//
// Loop thread only. Owned by its server or pool; Close() tears down at the end of the turn,
// never inside an nghttp2 callback.
#pragma once

#include <nghttp2/nghttp2.h>

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "relay/event_loop.h"
#include "relay/grpc_wire.h"

namespace shim::relay {

// Flow-control windows: how much a peer may send ahead before the relay has passed it on.
// They bound what one stream (kStreamWindow) and one connection (kConnectionWindow) can make
// the shim buffer when the other side reads slowly.
inline constexpr int32_t kStreamWindow = 1 << 20;
inline constexpr int32_t kConnectionWindow = 8 << 20;

class Http2Connection {
 public:
  using ClosedCallback = std::function<void(Http2Connection*)>;

  Http2Connection(EventLoop& loop, int fd, std::string name);
  virtual ~Http2Connection();
  Http2Connection(const Http2Connection&) = delete;
  Http2Connection& operator=(const Http2Connection&) = delete;

  // Output is written at the end of the current turn.
  void ScheduleFlush();
  // Closes the connection at the end of the turn; streams hear of it through OnClosed().
  void Close(const std::string& reason);
  bool closing() const { return closing_; }
  const std::string& name() const { return name_; }
  nghttp2_session* session() { return session_; }

  // Called once, after the connection is torn down, so its owner can drop it.
  void set_on_closed(ClosedCallback callback) { on_closed_ = std::move(callback); }

  // Returns the stream's and connection's flow-control credit for `n` bytes that have left the
  // shim. With stream_id 0 only the connection's.
  void Consume(int32_t stream_id, size_t n);
  void Resume(int32_t stream_id);
  void ResetStream(int32_t stream_id, uint32_t error_code);

  // A PING from the peer: its ACK rides along with the next frames this connection sends, or
  // goes alone after kPingAckDelay. gRPC peers ping with every call (bandwidth estimation);
  // answering at once cost a system call and a wake-up of the peer per call.
  void DeferPingAck(const uint8_t opaque[8]);

 protected:
  // Subclasses create session_ with `static_cast<Http2Connection*>(this)` as its user data and
  // these two as their begin-headers and header callbacks, then call Start().
  void Start();
  static int OnBeginHeaders(nghttp2_session*, const nghttp2_frame*, void* user_data);
  static int OnHeader(nghttp2_session*, const nghttp2_frame*, const uint8_t* name, size_t namelen,
                      const uint8_t* value, size_t valuelen, uint8_t, void* user_data);
  // The header block being received (blocks never interleave in HTTP/2), complete when the
  // HEADERS frame arrives in the subclass's frame callback.
  Headers TakeHeaders() { return std::move(scratch_); }
  // Every stream still open learns that the connection is gone. Runs once.
  virtual void OnClosed(const std::string& reason) = 0;

  EventLoop& loop_;
  nghttp2_session* session_ = nullptr;

 private:
  void OnEvents(uint32_t events);
  void Flush();
  void TearDown();
  void SubmitPingAcks();

  int fd_;
  std::string name_;
  std::string out_;  // serialized frames not yet written
  size_t out_head_ = 0;
  bool flush_scheduled_ = false;
  bool want_out_ = false;  // EPOLLOUT registered
  bool closing_ = false;
  std::string close_reason_;
  ClosedCallback on_closed_;
  std::vector<std::array<uint8_t, 8>> ping_acks_;  // owed to the peer
  static constexpr size_t kTypicalHeaderCount = 12;
  Headers scratch_;
  EventLoop::TimerId ping_ack_timer_ = 0;
};

// How long a PING's ACK may wait for other frames to travel with.
inline constexpr std::chrono::milliseconds kPingAckDelay{2};

// nghttp2 options shared by both sides: the shim passes gRPC's own header rules through and
// acknowledges data only as it leaves (backpressure).
nghttp2_option* NewRelayOptions();

}  // namespace shim::relay
