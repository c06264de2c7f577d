#include "fake_runtime.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <thread>

#include "echo_test.grpc.pb.h"

namespace shimtest {

// Counts a call as in flight for its handler's lifetime.
class InFlight {
 public:
  explicit InFlight(FakeRuntime::Counters& counters) : counters_(counters) {
    ++counters_.in_flight;
  }
  ~InFlight() { --counters_.in_flight; }

 private:
  FakeRuntime::Counters& counters_;
};

class FakeRuntime::Service final : public Echo::Service {
 public:
  explicit Service(Counters& counters) : counters_(counters) {}

  grpc::Status Unary(grpc::ServerContext* context, const EchoMessage* request,
                     EchoMessage* reply) override {
    InFlight in_flight(counters_);
    counters_.calls++;
    auto meta = context->client_metadata().find("x-test-meta");
    counters_.last_metadata_seen = meta != context->client_metadata().end() ? 1 : 0;
    if (meta != context->client_metadata().end()) {
      context->AddInitialMetadata("x-echo-meta",
                                  std::string(meta->second.data(), meta->second.size()));
      context->AddTrailingMetadata("x-trailer", "done");
    }
    *reply = *request;
    if (request->answer_bytes() > 0) reply->set_payload(std::string(request->answer_bytes(), 'r'));
    return grpc::Status::OK;
  }

  grpc::Status ServerStream(grpc::ServerContext* context, const EchoMessage* request,
                            grpc::ServerWriter<EchoMessage>* writer) override {
    counters_.calls++;
    EchoMessage m;
    m.set_payload(std::string(request->answer_bytes(), 's'));
    for (int i = 0; i < request->count(); ++i) {
      if (context->IsCancelled()) break;
      m.set_count(i);
      if (!writer->Write(m)) break;
      counters_.streamed_bytes += request->answer_bytes();
    }
    return grpc::Status::OK;
  }

  grpc::Status Bidi(grpc::ServerContext*,
                    grpc::ServerReaderWriter<EchoMessage, EchoMessage>* stream) override {
    counters_.calls++;
    EchoMessage m;
    while (stream->Read(&m)) {
      if (!stream->Write(m)) break;
    }
    return grpc::Status::OK;
  }

  grpc::Status Fail(grpc::ServerContext*, const EchoMessage* request, EchoMessage*) override {
    counters_.calls++;
    return grpc::Status(static_cast<grpc::StatusCode>(request->code()), request->text(),
                        request->payload());
  }

  grpc::Status Deadline(grpc::ServerContext* context, const EchoMessage*,
                        EchoMessage* reply) override {
    counters_.calls++;
    auto left = context->deadline() - std::chrono::system_clock::now();
    long long ms = std::chrono::duration_cast<std::chrono::milliseconds>(left).count();
    // An infinite deadline shows as a huge number.
    counters_.last_deadline_ms = ms;
    reply->set_text(std::to_string(ms));
    return grpc::Status::OK;
  }

  grpc::Status Hang(grpc::ServerContext* context, const EchoMessage*, EchoMessage*) override {
    InFlight in_flight(counters_);
    counters_.calls++;
    for (int i = 0; i < 3000 && !context->IsCancelled(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (context->IsCancelled()) counters_.cancelled++;
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "hang ended");
  }

 private:
  Counters& counters_;
};

FakeRuntime::FakeRuntime(std::string socket_path)
    : socket_path_(std::move(socket_path)), counters_(std::make_unique<Counters>()) {}

FakeRuntime::~FakeRuntime() {
  Stop();
}

void FakeRuntime::Start() {
  service_ = std::make_unique<Service>(*counters_);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + socket_path_, grpc::InsecureServerCredentials());
  builder.RegisterService(service_.get());
  builder.SetMaxReceiveMessageSize(16 << 20);
  builder.SetMaxSendMessageSize(16 << 20);
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, 1 << 20);
  if (max_concurrent_streams_ > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, max_concurrent_streams_);
  }
  server_ = builder.BuildAndStart();
}

void FakeRuntime::Stop() {
  if (!server_) return;
  server_->Shutdown(std::chrono::system_clock::now());  // cancel whatever is in flight
  server_->Wait();
  server_.reset();
}

}  // namespace shimtest
