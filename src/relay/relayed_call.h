// A call the shim passes through untouched: any method, any version, unary or streaming.
// Frames in, frames out: headers re-encoded, data moved through two byte queues, trailers,
// resets and cancellation carried both ways, and flow-control credit returned to each side
// only as its bytes leave for the other (backpressure).
//
// Loop thread only.
#pragma once

#include <chrono>
#include <memory>

#include "relay/byte_queue.h"
#include "relay/call_observer.h"
#include "relay/downstream.h"
#include "relay/upstream.h"

namespace shim::relay {

class RelayedCall final : public ServerStream,
                          public UpstreamStream,
                          public std::enable_shared_from_this<RelayedCall> {
 public:
  // Opens the upstream stream on `pool`'s connection; when the runtime cannot be reached the
  // call is answered UNAVAILABLE at once and nullptr is returned. `method_id`: the observer's id
  // of the call's path.
  static std::shared_ptr<ServerStream> Start(DownstreamConnection& down, int32_t down_id,
                                             const Headers& headers, bool end_stream,
                                             UpstreamPool& pool, CallObserver* observer,
                                             int method_id);

  RelayedCall(DownstreamConnection& down, int32_t down_id, CallObserver* observer, int method);

  // ServerStream
  void OnRequestData(const uint8_t* data, size_t n) override;
  void OnRequestEnd() override;
  void OnDownstreamClosed(uint32_t error_code) override;
  ssize_t ReadResponse(uint8_t* buf, size_t length, uint32_t* data_flags) override;

  // UpstreamStream
  void OnResponseHeaders(const Headers& headers, bool end_stream) override;
  void OnResponseData(const uint8_t* data, size_t n) override;
  void OnResponseTrailers(const Headers& trailers) override;
  void OnUpstreamClosed(uint32_t error_code, const std::string& reason) override;
  ssize_t ReadRequest(uint8_t* buf, size_t length, uint32_t* data_flags) override;

 private:
  DownstreamConnection* down_;  // nullptr once the downstream stream is closed
  int32_t down_id_;
  UpstreamConnection* up_ = nullptr;  // nullptr once the upstream stream is closed
  int32_t up_id_ = -1;

  ByteQueue request_;               // kubelet -> runtime
  ByteQueue response_;              // runtime -> kubelet
  size_t request_unconsumed_ = 0;   // received from kubelet, credit not yet returned
  size_t response_unconsumed_ = 0;  // received from the runtime, credit not yet returned
  bool request_ended_ = false;
  bool response_started_ = false;
  bool response_ended_ = false;
  bool trailers_submitted_ = false;  // to the downstream stream, sent after the body

  CallObserver* observer_;
  int method_;
  int code_ = CallObserver::kCallReset;  // the grpc-status sent to the caller
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace shim::relay
