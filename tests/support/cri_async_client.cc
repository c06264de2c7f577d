#include "cri_async_client.h"

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/channel_arguments.h>

#include <condition_variable>
#include <cstdio>
#include <mutex>

#include "cri_image.pb.h"

namespace shim::testing {

namespace {
constexpr int kMaxMessage = 16 * 1024 * 1024;  // what kubelet and containerd use

// Counts the calls whose state still exists. gRPC runs a call's completion callback on its own
// thread and, after the callback has signalled the answer, still drops its references to the call
// (the callback object, then the ClientContext with its call). The client waits for those to be
// gone before its channels go, so no call outlives the channel it was made on.
struct LiveCalls {
  std::mutex mu;
  std::condition_variable gone;
  int live = 0;  // GUARDED_BY(mu)
};

// Held by a call's state from its start until the state, ClientContext included, is destroyed.
class LiveCallToken {
 public:
  explicit LiveCallToken(std::shared_ptr<LiveCalls> calls) : calls_(std::move(calls)) {
    std::lock_guard lock(calls_->mu);
    ++calls_->live;
  }
  ~LiveCallToken() {
    std::lock_guard lock(calls_->mu);
    if (--calls_->live == 0) calls_->gone.notify_all();
  }
  LiveCallToken(const LiveCallToken&) = delete;
  LiveCallToken& operator=(const LiveCallToken&) = delete;

 private:
  std::shared_ptr<LiveCalls> calls_;
};
}  // namespace

struct CriAsyncClient::Impl {
  std::shared_ptr<LiveCalls> live_calls = std::make_shared<LiveCalls>();
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs;
  size_t next = 0;  // round-robin over the channels
};

// Everything a call in flight needs; the completion callback holds it until it has run.
struct CriAsyncClient::InFlight::State {
  explicit State(std::shared_ptr<LiveCalls> calls) : token(std::move(calls)) {}
  LiveCallToken token;  // first member: released last, after the ClientContext
  grpc::ClientContext context;
  grpc::ByteBuffer request;
  grpc::ByteBuffer response;
  std::mutex mu;
  std::condition_variable answered;
  bool done = false;           // GUARDED_BY(mu)
  grpc::Status status;         // GUARDED_BY(mu)
  std::string response_bytes;  // GUARDED_BY(mu)
};

CriAsyncClient::InFlight::InFlight(std::shared_ptr<State> state) : state_(std::move(state)) {}

CriAsyncClient::InFlight::~InFlight() {
  Cancel();
  Wait();
}

void CriAsyncClient::InFlight::Cancel() {
  state_->context.TryCancel();
}

grpc::Status CriAsyncClient::InFlight::Wait(std::string* response) {
  std::unique_lock lock(state_->mu);
  state_->answered.wait(lock, [&] { return state_->done; });
  if (response != nullptr) *response = state_->response_bytes;
  return state_->status;
}

std::map<grpc::StatusCode, int> CriAsyncClient::Result::Codes() const {
  std::map<grpc::StatusCode, int> codes;
  for (const auto& status : statuses) ++codes[status.error_code()];
  return codes;
}

int CriAsyncClient::Result::Ok() const {
  int ok = 0;
  for (const auto& status : statuses) ok += status.ok() ? 1 : 0;
  return ok;
}

CriAsyncClient::CriAsyncClient(const std::string& socket_path, int connections)
    : impl_(std::make_unique<Impl>()) {
  for (int i = 0; i < connections; ++i) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxMessage);
    args.SetMaxSendMessageSize(kMaxMessage);
    // Without this, channels with equal arguments share one subchannel: one connection for all.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetString(GRPC_ARG_DEFAULT_AUTHORITY, "localhost");  // kubelet's for unix sockets
    auto channel =
        grpc::CreateCustomChannel("unix:" + socket_path, grpc::InsecureChannelCredentials(), args);
    impl_->stubs.push_back(std::make_unique<grpc::GenericStub>(channel));
    impl_->channels.push_back(std::move(channel));
  }
}

CriAsyncClient::~CriAsyncClient() {
  // Every InFlight is gone by now (each waited for its answer); what may remain is gRPC's own
  // hold on the last calls' state, released on its threads right after the callbacks returned.
  std::unique_lock lock(impl_->live_calls->mu);
  if (!impl_->live_calls->gone.wait_for(lock, std::chrono::seconds(30),
                                        [&] { return impl_->live_calls->live == 0; })) {
    std::fprintf(stderr, "CriAsyncClient: %d calls still held by gRPC after 30 s\n",
                 impl_->live_calls->live);
  }
}

bool CriAsyncClient::Connect(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::system_clock::now() + timeout;
  for (auto& channel : impl_->channels) {
    if (!channel->WaitForConnected(deadline)) return false;
  }
  return true;
}

std::unique_ptr<CriAsyncClient::InFlight> CriAsyncClient::Start(
    const Call& call, std::optional<std::chrono::milliseconds> deadline) {
  auto state = std::make_shared<InFlight::State>(impl_->live_calls);
  if (deadline) state->context.set_deadline(std::chrono::system_clock::now() + *deadline);
  grpc::Slice slice(call.request);
  state->request = grpc::ByteBuffer(&slice, 1);
  grpc::GenericStub& stub = *impl_->stubs[impl_->next++ % impl_->stubs.size()];
  stub.UnaryCall(&state->context, call.path, grpc::StubOptions(), &state->request, &state->response,
                 [state](grpc::Status status) {
                   std::string bytes;
                   grpc::Slice single;
                   if (status.ok() && state->response.Valid() &&
                       state->response.DumpToSingleSlice(&single).ok()) {
                     bytes.assign(reinterpret_cast<const char*>(single.begin()), single.size());
                   }
                   std::lock_guard lock(state->mu);
                   state->status = std::move(status);
                   state->response_bytes = std::move(bytes);
                   state->done = true;
                   state->answered.notify_all();
                 });
  return std::unique_ptr<InFlight>(new InFlight(std::move(state)));
}

CriAsyncClient::Result CriAsyncClient::RunAll(const std::vector<Call>& calls,
                                              std::chrono::milliseconds deadline) {
  auto started = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<InFlight>> in_flight;
  in_flight.reserve(calls.size());
  for (const auto& call : calls) in_flight.push_back(Start(call, deadline));
  Result result;
  for (auto& call : in_flight) {
    std::string response;
    result.statuses.push_back(call->Wait(&response));
    result.responses.push_back(std::move(response));
  }
  result.took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  return result;
}

std::vector<CriAsyncClient::Call> VersionAndImageStatusCalls(int count, const std::string& image) {
  imagecrishim::cri::VersionRequest version;
  version.set_version("v1");
  imagecrishim::cri::ImageStatusRequest status;
  status.mutable_image()->set_image(image);
  const CriAsyncClient::Call version_call{"/runtime.v1.RuntimeService/Version",
                                          version.SerializeAsString()};
  const CriAsyncClient::Call status_call{"/runtime.v1.ImageService/ImageStatus",
                                         status.SerializeAsString()};
  std::vector<CriAsyncClient::Call> calls;
  calls.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) calls.push_back(i % 2 == 0 ? version_call : status_call);
  return calls;
}

}  // namespace shim::testing
