// See bench_client.h. Unary calls through grpc::GenericStub on the completion-queue API, each
// caller polling its own queue on its own thread (what the generated synchronous stubs do, minus
// a queue per call).
#include "bench_client.h"

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/completion_queue.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/channel_arguments.h>

#include <stdexcept>

#include "cri_async_client.h"

namespace shim::bench {

namespace {
constexpr int kMaxMessage = 16 * 1024 * 1024;  // kubelet's limit
}

struct BenchChannel::Impl {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<grpc::GenericStub> stub;
};

BenchChannel::BenchChannel(const std::string& socket_path)
    : socket_path_(socket_path), impl_(std::make_unique<Impl>()) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessage);
  args.SetMaxSendMessageSize(kMaxMessage);
  args.SetString(GRPC_ARG_DEFAULT_AUTHORITY, "localhost");
  // Each channel its own connection: the start-to-ready runs make fresh channels to a socket
  // whose server just changed, and must not inherit an old connection or its backoff.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // No GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: gRPC takes it as the connect timeout (SETTINGS frame
  // included), and a short one fails calls on a busy machine (see tests/support/cri_client.cc).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  impl_->channel =
      grpc::CreateCustomChannel("unix:" + socket_path, grpc::InsecureChannelCredentials(), args);
  impl_->stub = std::make_unique<grpc::GenericStub>(impl_->channel);
}

BenchChannel::~BenchChannel() = default;

struct BenchCaller::Impl {
  grpc::GenericStub* stub = nullptr;
  grpc::CompletionQueue cq;
};

BenchCaller::BenchCaller(BenchChannel& channel) : impl_(std::make_unique<Impl>()) {
  impl_->stub = channel.impl_->stub.get();
}

BenchCaller::~BenchCaller() {
  impl_->cq.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (impl_->cq.Next(&tag, &ok)) {
  }
}

CallResult BenchCaller::Call(const std::string& path, const std::string& request,
                             std::string* response) {
  grpc::ClientContext context;
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
      impl_->stub->PrepareUnaryCall(&context, path, request_buffer, &impl_->cq);
  call->StartCall();
  grpc::ByteBuffer response_buffer;
  grpc::Status status;
  call->Finish(&response_buffer, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  CallResult result;
  if (!impl_->cq.Next(&tag, &ok) || !ok) {
    result.error = "completion queue failed";
    return result;
  }
  if (!status.ok()) {
    result.error = "code " + std::to_string(static_cast<int>(status.error_code())) + ": " +
                   status.error_message();
    return result;
  }
  result.ok = true;
  result.response_bytes = response_buffer.Length();
  if (response != nullptr) {
    response->clear();
    grpc::Slice single;
    if (response_buffer.Valid() && response_buffer.DumpToSingleSlice(&single).ok()) {
      response->assign(reinterpret_cast<const char*>(single.begin()), single.size());
    }
  }
  return result;
}

struct BenchFlood::Impl {
  Impl(const std::string& socket, int connections, int count, const std::string& image)
      : client(socket, connections),
        calls(shim::testing::VersionAndImageStatusCalls(count, image)) {}
  shim::testing::CriAsyncClient client;
  std::vector<shim::testing::CriAsyncClient::Call> calls;
};

BenchFlood::BenchFlood(const std::string& socket_path, int connections, int calls,
                       const std::string& image)
    : impl_(std::make_unique<Impl>(socket_path, connections, calls, image)) {
  if (!impl_->client.Connect(std::chrono::seconds(10))) {
    throw std::runtime_error("flood: " + std::to_string(connections) + " connections to " +
                             socket_path + " not ready within 10 s");
  }
}

BenchFlood::~BenchFlood() = default;

BenchFlood::Result BenchFlood::Run() {
  auto outcome = impl_->client.RunAll(impl_->calls, std::chrono::seconds(60));
  Result result;
  result.ok = outcome.Ok();
  result.took_ms = static_cast<double>(outcome.took.count());
  for (const auto& status : outcome.statuses) {
    if (status.ok()) continue;
    result.first_error = "code " + std::to_string(static_cast<int>(status.error_code())) + ": " +
                         status.error_message();
    break;
  }
  return result;
}

}  // namespace shim::bench
