#include "relay/intercepted_call.h"

#include <cstdlib>

#include <spdlog/spdlog.h>

namespace shim::relay {

InterceptedCall::InterceptedCall(EventLoop& loop, DownstreamConnection& down, int32_t down_id,
                                 Headers headers, UpstreamPool& pool, Interceptor& interceptor,
                                 CallObserver* observer, int method_id)
    : loop_(loop),
      down_(&down),
      down_id_(down_id),
      headers_(std::move(headers)),
      path_(*FindHeader(headers_, ":path")),
      pool_(pool),
      interceptor_(interceptor),
      observer_(observer),
      method_(method_id) {}

void InterceptedCall::OnRequestData(const uint8_t* data, size_t n) {
  // Reassembled whole, so credit goes back at once; the 16 MiB limit bounds it.
  down_->Consume(down_id_, n);
  if (too_large_) return;
  if (body_.size() + n > kMaxMessageBytes + kMessagePrefixBytes) {
    too_large_ = true;
    std::string().swap(body_);
    return;
  }
  body_.append(reinterpret_cast<const char*>(data), n);
}

void InterceptedCall::OnRequestEnd() {
  if (finished()) return;
  if (too_large_) {
    ReplyError(GrpcCode::kResourceExhausted, "request message larger than 16 MiB");
    return;
  }
  interceptor_.Handle(shared_from_this());
}

void InterceptedCall::OnDownstreamClosed(uint32_t) {
  down_ = nullptr;
  // Closed before the reply, whatever the code (a client may reset with NO_ERROR): the caller
  // is gone, so is its call.
  if (!finished_) {
    cancelled_ = true;
    if (observer_ != nullptr) {
      observer_->OnCallFinished(method_, static_cast<int>(GrpcCode::kCancelled),
                                std::chrono::steady_clock::now() - start_);
    }
    CancelRuntimeCalls();
    if (auto hook = std::move(cancel_hook_)) hook();
  }
}

void InterceptedCall::CallRuntime(const std::string& path, std::string message, Done done) {
  CallRuntimeFramed(path, FrameMessage(message), std::move(done));
}

void InterceptedCall::CallRuntimeFramed(const std::string& path, std::string framed_body,
                                        Done done) {
  if (cancelled_) {
    loop_.Defer([done = std::move(done)] {
      UnaryResult result;
      result.code = static_cast<int>(GrpcCode::kCancelled);
      result.message = "cancelled";
      done(std::move(result));
    });
    return;
  }
  Headers headers = headers_;
  for (auto& h : headers) {
    if (h.name == ":path") h.value = path;
  }
  runtime_calls_.push_back(
      UnaryCall::Start(loop_, pool_, headers, std::move(framed_body), std::move(done)));
}

void InterceptedCall::CancelRuntimeCalls() {
  auto calls = std::move(runtime_calls_);
  runtime_calls_.clear();
  for (auto& weak : calls) {
    if (auto call = weak.lock()) call->Cancel();
  }
}

void InterceptedCall::Reply(const UnaryResult& result) {
  if (!result.answered) {
    ReplyError(static_cast<GrpcCode>(result.code), result.message);
    return;
  }
  Send(result.headers, result.body, result.trailers);
}

void InterceptedCall::ReplyByRelaying() {
  auto self = shared_from_this();
  CallRuntimeFramed(path_, body_, [self](UnaryResult result) {
    if (!self->finished()) self->Reply(result);
  });
}

void InterceptedCall::ReplyError(GrpcCode code, const std::string& message) {
  Send({}, {}, TrailersOnly(code, message));
}

void InterceptedCall::ReplyMessage(std::string message) {
  Send(ResponseHeaders(), FrameMessage(message), StatusTrailers(GrpcCode::kOk, ""));
}

void InterceptedCall::Send(Headers headers, std::string body, Headers trailers) {
  if (finished()) return;
  finished_ = true;
  runtime_calls_.clear();
  cancel_hook_ = nullptr;
  if (observer_ != nullptr) {
    observer_->OnCallFinished(method_, GrpcStatusOf(trailers, CallObserver::kCallReset),
                              std::chrono::steady_clock::now() - start_);
  }
  if (down_ == nullptr) return;
  if (headers.empty()) {  // trailers-only
    down_->SubmitResponse(down_id_, trailers, true);
    return;
  }
  response_body_ = std::move(body);
  down_->SubmitResponse(down_id_, headers, false);
  // The stream keeps them until the body is out.
  if (!trailers.empty()) {
    down_->SubmitTrailers(down_id_, trailers);
    trailers_submitted_ = true;
  }
}

ssize_t InterceptedCall::ReadResponse(uint8_t* buf, size_t length, uint32_t* data_flags) {
  size_t n = std::min(length, response_body_.size() - response_sent_);
  std::memcpy(buf, response_body_.data() + response_sent_, n);
  response_sent_ += n;
  if (response_sent_ == response_body_.size()) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    if (trailers_submitted_) *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
  }
  return static_cast<ssize_t>(n);
}

}  // namespace shim::relay
