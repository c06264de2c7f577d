// The runtime side: HTTP/2 client connections to the runtime's socket, shared by every kubelet
// connection and by the shim's own calls.
//
// Loop thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "relay/http2_connection.h"
#include "relay/streams.h"

namespace shim::relay {

class UpstreamConnection : public Http2Connection {
 public:
  // Takes a connected, non-blocking socket.
  UpstreamConnection(EventLoop& loop, int fd, std::string name);
  ~UpstreamConnection() override;

  // Opens a stream with `headers`; the request body comes from stream->ReadRequest unless
  // `end_stream`. Returns the stream id, or a negative nghttp2 error (the stream then never
  // hears from this connection).
  int32_t Submit(const Headers& headers, std::shared_ptr<UpstreamStream> stream, bool end_stream);
  // Resets the stream and forgets it: no more callbacks for it.
  void Cancel(int32_t stream_id, uint32_t error_code);

  // False once the runtime said GOAWAY, stream ids ran out or the connection closed: new calls
  // then go to a new connection while this one finishes what it has.
  bool accepting() const { return !closing() && !draining_; }

 protected:
  void OnClosed(const std::string& reason,
                std::vector<std::shared_ptr<StreamHandler>> handlers) override;

 private:
  void OnPeerGoAway(int32_t last_stream_id, uint32_t error_code) override;
  void OnHeaderBlock(int32_t stream_id, bool first, const Headers& headers,
                     bool end_stream) override;
  void OnData(int32_t stream_id, const uint8_t* data, size_t n) override;
  void OnEndStream(int32_t stream_id) override;
  void OnStreamClosed(int32_t stream_id, std::shared_ptr<StreamHandler> handler,
                      uint32_t error_code) override;
  ssize_t ReadBody(int32_t stream_id, uint8_t* buf, size_t length, uint32_t* data_flags) override;

  // The call of a stream, or nullptr.
  std::shared_ptr<UpstreamStream> Find(int32_t stream_id);
  void CloseIfDrained();

  bool draining_ = false;
};

// Hands out the connection new calls go to, connecting (and reconnecting after a runtime
// restart) on demand. A unix socket connects at once or fails at once, so no call waits.
class UpstreamPool {
 public:
  UpstreamPool(EventLoop& loop, std::string socket_path);
  ~UpstreamPool();

  // The accepting connection, connected now if needed; nullptr with `error` set when the
  // runtime cannot be reached ("connect /run/containerd/containerd.sock: No such file ...").
  UpstreamConnection* Get(std::string* error);
  const std::string& socket_path() const { return socket_path_; }
  // A connection is up and accepting calls (for readiness).
  bool connected() const;
  // Closes every connection (shutdown).
  void CloseAll();

 private:
  void Drop(Http2Connection* connection);

  EventLoop& loop_;
  std::string socket_path_;
  UpstreamConnection* current_ = nullptr;
  std::vector<std::unique_ptr<UpstreamConnection>> connections_;  // current and draining
  uint64_t connections_made_ = 0;
};

}  // namespace shim::relay
