// The kubelet side: the server end of each accepted connection. Each new request is
// handed to a StreamFactory, which decides whether it is relayed or intercepted.
//
// Loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "relay/http2_connection.h"
#include "relay/streams.h"

namespace shim::relay {

class DownstreamConnection;

// Creates the call object for a request whose headers are complete (valid during the call only:
// a call that keeps them copies them). May answer at once (for instance with an error) and return
// nullptr.
using StreamFactory =
    std::function<std::shared_ptr<ServerStream>(DownstreamConnection& connection, int32_t stream_id,
                                                const Headers& request_headers, bool end_stream)>;

class DownstreamConnection : public Http2Connection {
 public:
  // How long a new connection may take to send the HTTP/2 preface and its SETTINGS.
  static constexpr std::chrono::milliseconds kPrefaceTimeout{10'000};

  DownstreamConnection(EventLoop& loop, int fd, std::string name, StreamFactory factory,
                       std::chrono::milliseconds preface_timeout = kPrefaceTimeout);
  ~DownstreamConnection() override;

  // Response HEADERS; the body then comes from the stream's ReadResponse unless `end_stream`
  // (a trailers-only answer).
  void SubmitResponse(int32_t stream_id, const Headers& headers, bool end_stream);
  // Trailers, sent after the response body: ReadResponse then returns EOF | NO_END_STREAM.
  void SubmitTrailers(int32_t stream_id, const Headers& trailers);
  // Resets the stream and forgets it: no more callbacks for it.
  void Cancel(int32_t stream_id, uint32_t error_code);

  // Graceful shutdown: GOAWAY, calls in flight go on, the connection closes when they are done.
  void Shutdown();

 protected:
  void OnClosed(const std::string& reason,
                std::vector<std::shared_ptr<StreamHandler>> handlers) override;

 private:
  void OnPrefaceReceived() override;
  void OnHeaderBlock(int32_t stream_id, bool first, const Headers& headers,
                     bool end_stream) override;
  void OnData(int32_t stream_id, const uint8_t* data, size_t n) override;
  void OnEndStream(int32_t stream_id) override;
  void OnStreamClosed(int32_t stream_id, std::shared_ptr<StreamHandler> handler,
                      uint32_t error_code) override;
  ssize_t ReadBody(int32_t stream_id, uint8_t* buf, size_t length, uint32_t* data_flags) override;

  // The call of a stream, or nullptr.
  std::shared_ptr<ServerStream> Find(int32_t stream_id);

  StreamFactory factory_;
  // Pending until the client's first frame: a connection that never speaks HTTP/2 is closed
  // instead of holding a descriptor and a session for ever. 0: none pending.
  EventLoop::TimerId preface_timer_ = 0;
};

}  // namespace shim::relay
