#include "relay/unary_call.h"

#include <cstdlib>
#include <cstring>

namespace shim::relay {

std::shared_ptr<UnaryCall> UnaryCall::Start(EventLoop& loop, UpstreamPool& pool,
                                            const Headers& headers, std::string framed_body,
                                            Done done) {
  auto call = std::make_shared<UnaryCall>(std::move(framed_body), std::move(done));
  std::string error;
  UpstreamConnection* up = pool.Get(&error);
  int32_t id = -1;
  if (up != nullptr) {
    id = up->Submit(headers, call, false);
    if (id < 0) error = std::string("runtime connection: ") + nghttp2_strerror(id);
  }
  if (up == nullptr || id < 0) {
    // Answer later, never from inside the caller: callers may be looping over results.
    loop.Defer([call, error] { call->Finish(false, GrpcCode::kUnavailable, error); });
    return call;
  }
  call->up_ = up;
  call->id_ = id;
  return call;
}

Headers UnaryCall::OwnHeaders(const std::string& path) {
  return {{":method", "POST"},
          {":scheme", "http"},
          {":path", path},
          {":authority", "localhost"},
          {"content-type", "application/grpc"},
          {"te", "trailers"},
          {"user-agent", "image-cri-shim"}};
}

void UnaryCall::Cancel() {
  if (up_ == nullptr) return;
  UpstreamConnection* up = up_;
  up_ = nullptr;
  up->Cancel(id_, NGHTTP2_CANCEL);
  Finish(false, GrpcCode::kCancelled, "cancelled");
}

void UnaryCall::OnResponseHeaders(const Headers& headers, bool end_stream) {
  if (end_stream) {
    result_.trailers = headers;
  } else {
    result_.headers = headers;
  }
}

void UnaryCall::OnResponseData(const uint8_t* data, size_t n) {
  // The whole answer is kept until it is complete, so credit goes back at once; the size
  // limit is what bounds it.
  up_->Consume(id_, n);
  if (too_large_ || result_.body.size() + n > kMaxMessageBytes + kMessagePrefixBytes) {
    too_large_ = true;
    std::string().swap(result_.body);
    return;
  }
  result_.body.append(reinterpret_cast<const char*>(data), n);
}

void UnaryCall::OnResponseTrailers(const Headers& trailers) {
  result_.trailers = trailers;
}

void UnaryCall::OnUpstreamClosed(uint32_t error_code, const std::string& reason) {
  up_ = nullptr;
  if (too_large_) {
    Finish(false, GrpcCode::kResourceExhausted, "the runtime's answer is larger than 16 MiB");
    return;
  }
  const std::string* status = FindHeader(result_.trailers, "grpc-status");
  if (status == nullptr) {
    Finish(false, GrpcCode::kUnavailable,
           reason.empty() ? "the runtime closed the call without a status" : reason);
    return;
  }
  (void)error_code;  // a reset after the trailers (grpc-go's NO_ERROR) changes nothing
  result_.answered = true;
  // A grpc-status that is not a number is the runtime's fault, not a success.
  result_.code = GrpcStatusOf(result_.trailers, static_cast<int>(GrpcCode::kUnknown));
  const std::string* message = FindHeader(result_.trailers, "grpc-message");
  result_.message = message ? PercentDecode(*message) : "";
  Done done = std::move(done_);
  done_ = nullptr;
  if (done) done(std::move(result_));
}

ssize_t UnaryCall::ReadRequest(uint8_t* buf, size_t length, uint32_t* data_flags) {
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

void UnaryCall::Finish(bool answered, GrpcCode code, std::string message) {
  Done done = std::move(done_);
  done_ = nullptr;
  if (!done) return;
  UnaryResult result;
  result.answered = answered;
  result.code = static_cast<int>(code);
  result.message = std::move(message);
  done(std::move(result));
}

}  // namespace shim::relay
