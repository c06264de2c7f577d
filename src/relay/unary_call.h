// A unary gRPC call of the shim's own to the runtime, on the relay's upstream connections and
// event loop: sends a whole body, gathers the whole answer, and reports it once.
//
// Loop thread only.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "relay/streams.h"
#include "relay/upstream.h"

namespace shim::relay {

// The complete answer to one unary call.
struct UnaryResult {
  bool answered = false;  // false: no gRPC status came (runtime unreachable, reset, cancelled)
  int code = static_cast<int>(GrpcCode::kUnknown);  // grpc-status, or the shim's own if !answered
  std::string message;  // grpc-message, percent-decoded, or why there was no answer
  Headers headers;      // response headers; empty for trailers-only answers
  std::string body;     // response body as framed on the wire
  Headers trailers;     // trailers, or the single header block of a trailers-only answer

  bool ok() const { return answered && code == 0; }
  // The single response message, without its gRPC prefix.
  std::optional<std::string_view> Message() const { return SingleMessage(body); }
};

class UnaryCall final : public UpstreamStream {
 public:
  using Done = std::function<void(UnaryResult)>;

  // Starts the call. `done` always runs exactly once, on the loop thread, never from inside
  // Start itself. The returned handle may be dropped; it is only needed to Cancel().
  static std::shared_ptr<UnaryCall> Start(EventLoop& loop, UpstreamPool& pool,
                                          const Headers& headers, std::string framed_body,
                                          Done done);
  // Headers of a call the shim makes on its own behalf (no kubelet call to copy them from).
  static Headers OwnHeaders(const std::string& path);

  // Resets the call upstream; `done` runs now with answered == false and code CANCELLED.
  void Cancel();

  // UpstreamStream
  void OnResponseHeaders(const Headers& headers, bool end_stream) override;
  void OnResponseData(const uint8_t* data, size_t n) override;
  void OnResponseTrailers(const Headers& trailers) override;
  void OnUpstreamClosed(uint32_t error_code, const std::string& reason) override;
  ssize_t ReadRequest(uint8_t* buf, size_t length, uint32_t* data_flags) override;

  UnaryCall(std::string body, Done done) : body_(std::move(body)), done_(std::move(done)) {}

 private:
  void Finish(bool answered, GrpcCode code, std::string message);

  std::string body_;
  size_t sent_ = 0;
  Done done_;
  UpstreamConnection* up_ = nullptr;
  int32_t id_ = -1;
  UnaryResult result_;
  bool too_large_ = false;
};

}  // namespace shim::relay
