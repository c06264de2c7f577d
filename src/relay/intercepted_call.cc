#include "relay/intercepted_call.h"

#include <spdlog/spdlog.h>

namespace shim::relay {

// One unary call of the shim's own to the runtime: sends a whole body, gathers the whole answer.
class InterceptedCall::RuntimeCall final : public UpstreamStream {
 public:
  RuntimeCall(std::string body, Done done) : body_(std::move(body)), done_(std::move(done)) {}

  void Attach(UpstreamConnection* up, int32_t id) {
    up_ = up;
    id_ = id;
  }

  void Cancel() {
    if (up_ == nullptr) return;
    UpstreamConnection* up = up_;
    up_ = nullptr;
    up->Cancel(id_, NGHTTP2_CANCEL);
    Finish(false, GrpcCode::kCancelled, "cancelled");
  }

  void OnResponseHeaders(Headers headers, bool end_stream) override {
    if (end_stream) {
      result_.trailers = std::move(headers);
    } else {
      result_.headers = std::move(headers);
    }
  }

  void OnResponseData(const uint8_t* data, size_t n) override {
    // The whole answer is kept until it is complete, so credit goes back at once; the size
    // limit below is what bounds it.
    up_->Consume(id_, n);
    if (result_.body.size() + n > kMaxMessageBytes + kMessagePrefixBytes) {
      too_large_ = true;
      return;
    }
    result_.body.append(reinterpret_cast<const char*>(data), n);
  }

  void OnResponseTrailers(Headers trailers) override { result_.trailers = std::move(trailers); }

  void OnUpstreamClosed(uint32_t error_code, const std::string& reason) override {
    up_ = nullptr;
    if (too_large_) {
      Finish(false, GrpcCode::kResourceExhausted, "the runtime's answer is larger than 16 MiB");
      return;
    }
    const std::string* status = FindHeader(result_.trailers, "grpc-status");
    if (error_code != NGHTTP2_NO_ERROR || status == nullptr) {
      Finish(false, GrpcCode::kUnavailable,
             reason.empty() ? "the runtime closed the call without a status" : reason);
      return;
    }
    result_.answered = true;
    result_.code = std::atoi(status->c_str());
    const std::string* message = FindHeader(result_.trailers, "grpc-message");
    result_.message = message ? PercentDecode(*message) : "";
    Done done = std::move(done_);
    done_ = nullptr;
    if (done) done(std::move(result_));
  }

  ssize_t ReadRequest(uint8_t* buf, size_t length, uint32_t* data_flags) override {
    size_t n = std::min(length, body_.size() - sent_);
    std::memcpy(buf, body_.data() + sent_, n);
    sent_ += n;
    if (sent_ == body_.size()) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      std::string().swap(body_);
      sent_ = 0;
    }
    return static_cast<ssize_t>(n);
  }

  void Finish(bool answered, GrpcCode code, std::string message) {
    Done done = std::move(done_);
    done_ = nullptr;
    if (!done) return;
    UnaryResult result;
    result.answered = answered;
    result.code = static_cast<int>(code);
    result.message = std::move(message);
    done(std::move(result));
  }

 private:
  std::string body_;
  size_t sent_ = 0;
  Done done_;
  UpstreamConnection* up_ = nullptr;
  int32_t id_ = -1;
  UnaryResult result_;
  bool too_large_ = false;
};

InterceptedCall::InterceptedCall(EventLoop& loop, DownstreamConnection& down, int32_t down_id,
                                 Headers headers, UpstreamPool& pool, Interceptor& interceptor)
    : loop_(loop),
      down_(&down),
      down_id_(down_id),
      headers_(std::move(headers)),
      path_(*FindHeader(headers_, ":path")),
      pool_(pool),
      interceptor_(interceptor) {}

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

void InterceptedCall::OnDownstreamClosed(uint32_t error_code) {
  down_ = nullptr;
  if (!finished_ && error_code != NGHTTP2_NO_ERROR) {
    cancelled_ = true;
    CancelRuntimeCalls();
  }
}

void InterceptedCall::CallRuntime(const std::string& path, std::string message, Done done) {
  CallRuntimeFramed(path, FrameMessage(message), std::move(done));
}

void InterceptedCall::CallRuntimeFramed(const std::string& path, std::string framed_body,
                                        Done done) {
  auto call = std::make_shared<RuntimeCall>(std::move(framed_body), std::move(done));
  if (cancelled_) {
    loop_.Defer([call] { call->Finish(false, GrpcCode::kCancelled, "cancelled"); });
    return;
  }
  std::string error;
  UpstreamConnection* up = pool_.Get(&error);
  int32_t id = -1;
  if (up != nullptr) {
    Headers headers = headers_;
    for (auto& h : headers) {
      if (h.name == ":path") h.value = path;
    }
    id = up->Submit(headers, call, false);
    if (id < 0) error = std::string("runtime connection: ") + nghttp2_strerror(id);
  }
  if (up == nullptr || id < 0) {
    // Answer later, never from inside the caller's own call: handlers may loop over results.
    loop_.Defer([call, error] { call->Finish(false, GrpcCode::kUnavailable, error); });
    return;
  }
  call->Attach(up, id);
  runtime_calls_.push_back(call);
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

void InterceptedCall::Send(Headers headers, std::string body, Headers trailers) {
  if (finished()) return;
  finished_ = true;
  runtime_calls_.clear();
  if (down_ == nullptr) return;
  if (headers.empty()) {  // trailers-only
    down_->SubmitResponse(down_id_, trailers, true);
    return;
  }
  response_body_ = std::move(body);
  response_trailers_ = std::move(trailers);
  down_->SubmitResponse(down_id_, headers, false);
}

ssize_t InterceptedCall::ReadResponse(uint8_t* buf, size_t length, uint32_t* data_flags) {
  size_t n = std::min(length, response_body_.size() - response_sent_);
  std::memcpy(buf, response_body_.data() + response_sent_, n);
  response_sent_ += n;
  if (response_sent_ == response_body_.size()) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!response_trailers_.empty()) {
      down_->SubmitTrailers(down_id_, response_trailers_);
      *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
  }
  return static_cast<ssize_t>(n);
}

}  // namespace shim::relay
