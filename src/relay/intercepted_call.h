// A unary call the shim answers itself (the image methods): the request message is reassembled
// and handed to an Interceptor, which may make its own unary calls to the runtime on the same
// upstream connections and then replies, usually with one of the runtime's answers as it came.
//
// Loop thread only.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "relay/call_observer.h"
#include "relay/downstream.h"
#include "relay/event_loop.h"
#include "relay/unary_call.h"
#include "relay/upstream.h"

namespace shim::relay {

class InterceptedCall;

class Interceptor {
 public:
  virtual ~Interceptor() = default;
  // True when calls to `path` are answered by Handle() rather than relayed. Depends on the path
  // alone: the relay remembers the answer.
  virtual bool Intercepts(std::string_view path) const = 0;
  // The request is complete. The handler must end the call with one of the Reply methods
  // unless call->cancelled() becomes true first.
  virtual void Handle(std::shared_ptr<InterceptedCall> call) = 0;
};

class InterceptedCall final : public ServerStream,
                              public std::enable_shared_from_this<InterceptedCall> {
 public:
  using Done = UnaryCall::Done;

  // `method_id`: the observer's id of the call's path (CallObserver::MethodId).
  InterceptedCall(EventLoop& loop, DownstreamConnection& down, int32_t down_id, Headers headers,
                  UpstreamPool& pool, Interceptor& interceptor, CallObserver* observer,
                  int method_id);

  const Headers& request_headers() const { return headers_; }
  const std::string& path() const { return path_; }
  // The request message without its prefix; nullopt if the body is not one plain message.
  std::optional<std::string_view> request_message() const { return SingleMessage(body_); }
  EventLoop& loop() { return loop_; }
  UpstreamPool& pool() { return pool_; }
  // Runs `hook` once if the caller goes away before a reply (cancel, deadline, disconnect).
  void OnCancelled(std::function<void()> hook) { cancel_hook_ = std::move(hook); }
  // The caller cancelled, its connection closed, or a reply was sent.
  bool cancelled() const { return cancelled_; }
  bool finished() const { return finished_ || cancelled_; }

  // A unary call to the runtime with this call's headers (metadata, grpc-timeout) but `path`
  // and `message`. `done` always runs, later, on the loop thread; after a cancel with
  // answered == false and code CANCELLED.
  void CallRuntime(const std::string& path, std::string message, Done done);
  // Cancels every CallRuntime still in flight.
  void CancelRuntimeCalls();

  // Ends the call with a runtime answer as it came (headers, body, trailers).
  void Reply(const UnaryResult& result);
  // Ends the call with the runtime's original method and the request as it came.
  void ReplyByRelaying();
  void ReplyError(GrpcCode code, const std::string& message);
  // Ends the call OK with a message of the shim's own making.
  void ReplyMessage(std::string message);

  // ServerStream
  void OnRequestData(const uint8_t* data, size_t n) override;
  void OnRequestEnd() override;
  void OnDownstreamClosed(uint32_t error_code) override;
  ssize_t ReadResponse(uint8_t* buf, size_t length, uint32_t* data_flags) override;

 private:
  void Send(Headers headers, std::string body, Headers trailers);
  void CallRuntimeFramed(const std::string& path, std::string framed_body, Done done);

  EventLoop& loop_;
  DownstreamConnection* down_;
  int32_t down_id_;
  Headers headers_;
  std::string path_;
  UpstreamPool& pool_;
  Interceptor& interceptor_;
  std::string body_;
  bool too_large_ = false;
  bool cancelled_ = false;
  bool finished_ = false;
  std::vector<std::weak_ptr<UnaryCall>> runtime_calls_;
  std::function<void()> cancel_hook_;
  CallObserver* observer_;
  int method_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();

  std::string response_body_;
  size_t response_sent_ = 0;
  bool trailers_submitted_ = false;  // to the downstream stream, sent after the body
};

}  // namespace shim::relay
