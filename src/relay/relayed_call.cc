#include "relay/relayed_call.h"

#include <spdlog/spdlog.h>

namespace shim::relay {

namespace {
// What a kubelet's gRPC client sees when the runtime side breaks before answering.
GrpcCode CodeForReset(uint32_t error_code) {
  switch (error_code) {
    case NGHTTP2_CANCEL:
      return GrpcCode::kCancelled;
    case NGHTTP2_REFUSED_STREAM:
      return GrpcCode::kUnavailable;
    case NGHTTP2_ENHANCE_YOUR_CALM:
      return GrpcCode::kResourceExhausted;
    default:
      return GrpcCode::kUnavailable;
  }
}
}  // namespace

std::shared_ptr<ServerStream> RelayedCall::Start(DownstreamConnection& down, int32_t down_id,
                                                 const Headers& headers, bool end_stream,
                                                 UpstreamPool& pool, CallObserver* observer,
                                                 int method) {
  std::string error;
  UpstreamConnection* up = pool.Get(&error);
  int32_t up_id = -1;
  auto call = std::make_shared<RelayedCall>(down, down_id, observer, method);
  if (up != nullptr) {
    call->request_ended_ = end_stream;
    up_id = up->Submit(headers, call, end_stream);
    if (up_id < 0) error = std::string("runtime connection: ") + nghttp2_strerror(up_id);
  }
  if (up == nullptr || up_id < 0) {
    spdlog::debug("relay refused path={} reason=\"{}\"", *FindHeader(headers, ":path"), error);
    down.SubmitResponse(down_id, TrailersOnly(GrpcCode::kUnavailable, error), true);
    if (observer != nullptr) {
      observer->OnCallFinished(method, static_cast<int>(GrpcCode::kUnavailable),
                               std::chrono::nanoseconds(0));
    }
    return nullptr;
  }
  call->up_ = up;
  call->up_id_ = up_id;
  return call;
}

RelayedCall::RelayedCall(DownstreamConnection& down, int32_t down_id, CallObserver* observer,
                         int method)
    : down_(&down), down_id_(down_id), observer_(observer), method_(method) {}

void RelayedCall::OnRequestData(const uint8_t* data, size_t n) {
  request_unconsumed_ += n;
  if (up_ == nullptr) {  // nowhere to go: drop it, give the credit back
    down_->Consume(down_id_, n);
    request_unconsumed_ -= n;
    return;
  }
  request_.Append(data, n);
  up_->Resume(up_id_);
}

void RelayedCall::OnRequestEnd() {
  request_ended_ = true;
  if (up_ != nullptr) up_->Resume(up_id_);
}

ssize_t RelayedCall::ReadRequest(uint8_t* buf, size_t length, uint32_t* data_flags) {
  size_t n = request_.Take(buf, length);
  if (n > 0 && down_ != nullptr) {
    down_->Consume(down_id_, n);
    request_unconsumed_ -= n;
  }
  if (request_.empty()) {
    if (request_ended_) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    } else if (n == 0) {
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  return static_cast<ssize_t>(n);
}

void RelayedCall::OnResponseHeaders(const Headers& headers, bool end_stream) {
  if (down_ == nullptr) return;
  response_started_ = true;
  response_ended_ = end_stream;
  if (end_stream) code_ = GrpcStatusOf(headers, CallObserver::kCallReset);
  down_->SubmitResponse(down_id_, headers, end_stream);
}

void RelayedCall::OnResponseData(const uint8_t* data, size_t n) {
  response_unconsumed_ += n;
  if (down_ == nullptr) {
    up_->Consume(up_id_, n);
    response_unconsumed_ -= n;
    return;
  }
  response_.Append(data, n);
  down_->Resume(down_id_);
}

void RelayedCall::OnResponseTrailers(const Headers& trailers) {
  code_ = GrpcStatusOf(trailers, CallObserver::kCallReset);
  response_ended_ = true;
  if (down_ == nullptr) return;
  // Handed over now (the stream keeps them until the body is out), so they are copied once.
  if (!trailers.empty()) {
    down_->SubmitTrailers(down_id_, trailers);
    trailers_submitted_ = true;
  }
  down_->Resume(down_id_);
}

ssize_t RelayedCall::ReadResponse(uint8_t* buf, size_t length, uint32_t* data_flags) {
  size_t n = response_.Take(buf, length);
  if (n > 0 && up_ != nullptr) {
    response_unconsumed_ -= n;
    up_->Consume(up_id_, n);
  }
  if (response_.empty()) {
    if (response_ended_) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      if (trailers_submitted_) *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    } else if (n == 0) {
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  return static_cast<ssize_t>(n);
}

void RelayedCall::OnUpstreamClosed(uint32_t error_code, const std::string& reason) {
  UpstreamConnection* up = up_;
  up_ = nullptr;
  // The stream is gone on that side: its window no longer matters, the connection's does.
  if (response_unconsumed_ > 0 && up != nullptr) up->Consume(0, response_unconsumed_);
  response_unconsumed_ = 0;
  if (down_ == nullptr) return;
  if (error_code == NGHTTP2_NO_ERROR && response_ended_) return;  // trailers are on their way
  if (!response_started_) {
    // Nothing sent yet: a proper gRPC status explains more than a reset would.
    std::string message = reason.empty() ? "the runtime closed the call without an answer" : reason;
    response_started_ = response_ended_ = true;
    code_ = static_cast<int>(CodeForReset(error_code));
    down_->SubmitResponse(down_id_, TrailersOnly(CodeForReset(error_code), message), true);
    return;
  }
  DownstreamConnection* down = down_;
  down_ = nullptr;
  if (observer_ != nullptr) {
    observer_->OnCallFinished(method_, CallObserver::kCallReset,
                              std::chrono::steady_clock::now() - start_);
  }
  if (request_unconsumed_ > 0) down->Consume(0, request_unconsumed_);
  request_unconsumed_ = 0;
  down->Cancel(down_id_,
               error_code == NGHTTP2_NO_ERROR ? uint32_t{NGHTTP2_INTERNAL_ERROR} : error_code);
}

void RelayedCall::OnDownstreamClosed(uint32_t error_code) {
  if (observer_ != nullptr && down_ != nullptr) {
    int code = error_code == NGHTTP2_NO_ERROR ? code_ : static_cast<int>(GrpcCode::kCancelled);
    observer_->OnCallFinished(method_, code, std::chrono::steady_clock::now() - start_);
  }
  DownstreamConnection* down = down_;
  down_ = nullptr;
  if (request_unconsumed_ > 0 && down != nullptr) down->Consume(0, request_unconsumed_);
  request_unconsumed_ = 0;
  request_.Clear();
  if (up_ == nullptr) return;
  if (error_code != NGHTTP2_NO_ERROR || !request_ended_ || !response_ended_) {
    // The caller gave up (cancel, deadline, connection lost): so does the runtime.
    UpstreamConnection* up = up_;
    up_ = nullptr;
    if (response_unconsumed_ > 0) up->Consume(0, response_unconsumed_);
    response_unconsumed_ = 0;
    up->Cancel(up_id_, NGHTTP2_CANCEL);
  }
}

}  // namespace shim::relay
