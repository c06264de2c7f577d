// The only translation unit of the harness that includes the gRPC library headers (they are
// slow to compile on the shared 2-core machine).
#include "cri_client.h"

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/channel_arguments.h>

#include <condition_variable>
#include <mutex>

namespace shim::testing {

namespace {
constexpr int kMaxMessage = 16 * 1024 * 1024;  // what kubelet and containerd use
}

struct CriClient::Impl {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<grpc::GenericStub> stub;
};

CriClient::CriClient(const std::string& socket_path, std::string api)
    : socket_path_(socket_path), api_(std::move(api)), impl_(std::make_unique<Impl>()) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessage);
  args.SetMaxSendMessageSize(kMaxMessage);
  // A runtime restart in a test must not leave the channel in a long reconnect backoff.
  // GRPC_ARG_MIN_RECONNECT_BACKOFF_MS stays unset: despite its name gRPC takes it as the time
  // a connection attempt has to get the server's SETTINGS frame, and at 100 ms a busy machine
  // failed fresh channels with UNAVAILABLE before the server had run. The default is 20 s, as
  // for kubelet.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // kubelet's authority for unix sockets; the default would be the socket path.
  args.SetString(GRPC_ARG_DEFAULT_AUTHORITY, "localhost");
  impl_->channel =
      grpc::CreateCustomChannel("unix:" + socket_path, grpc::InsecureChannelCredentials(), args);
  impl_->stub = std::make_unique<grpc::GenericStub>(impl_->channel);
}

CriClient::~CriClient() = default;

std::string CriClient::ImagePath(const std::string& method) const {
  return "/runtime." + api_ + ".ImageService/" + method;
}

std::string CriClient::RuntimePath(const std::string& method) const {
  return "/runtime." + api_ + ".RuntimeService/" + method;
}

grpc::Status CriClient::Call(const std::string& path, const std::string& request,
                             std::string* response, const CallOptions& options,
                             CallMetadata* metadata) {
  grpc::ClientContext context;
  for (const auto& [key, value] : options.metadata) context.AddMetadata(key, value);
  if (options.timeout) context.set_deadline(std::chrono::system_clock::now() + *options.timeout);
  context.set_wait_for_ready(options.wait_for_ready);

  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;

  std::mutex mu;
  std::condition_variable done_cv;
  bool done = false;
  grpc::Status result;
  impl_->stub->UnaryCall(&context, path, grpc::StubOptions(), &request_buffer, &response_buffer,
                         [&](grpc::Status status) {
                           std::lock_guard lock(mu);
                           result = std::move(status);
                           done = true;
                           done_cv.notify_one();
                         });
  {
    std::unique_lock lock(mu);
    if (options.cancel_after &&
        !done_cv.wait_for(lock, *options.cancel_after, [&] { return done; })) {
      context.TryCancel();  // as kubelet does when it gives up on a call
    }
    done_cv.wait(lock, [&] { return done; });
  }

  if (metadata != nullptr) {
    metadata->initial.clear();
    metadata->trailing.clear();
    for (const auto& [key, value] : context.GetServerInitialMetadata()) {
      metadata->initial.emplace(std::string(key.data(), key.size()),
                                std::string(value.data(), value.size()));
    }
    for (const auto& [key, value] : context.GetServerTrailingMetadata()) {
      metadata->trailing.emplace(std::string(key.data(), key.size()),
                                 std::string(value.data(), value.size()));
    }
  }
  if (response != nullptr) {
    response->clear();
    if (result.ok()) {
      grpc::Slice single;
      if (response_buffer.Valid() && response_buffer.DumpToSingleSlice(&single).ok()) {
        response->assign(reinterpret_cast<const char*>(single.begin()), single.size());
      }
    }
  }
  return result;
}

grpc::Status CriClient::Call(const std::string& path, const google::protobuf::MessageLite& request,
                             google::protobuf::MessageLite* response, const CallOptions& options,
                             CallMetadata* metadata) {
  std::string bytes;
  grpc::Status status = Call(path, request.SerializeAsString(), &bytes, options, metadata);
  if (status.ok() && response != nullptr && !response->ParseFromString(bytes)) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "cri-client: cannot parse the answer of " +
                                                        path + " as " + response->GetTypeName());
  }
  return status;
}

grpc::Status CriClient::Version(const std::string& api, cri::VersionResponse* response,
                                const CallOptions& options) {
  cri::VersionRequest request;
  request.set_version(api == "v1alpha2" ? "0.1.0" : "v1");
  return Call("/runtime." + api + ".RuntimeService/Version", request, response, options);
}

namespace {
grpc::Status Pull(CriClient& client, const cri::PullImageRequest& request, std::string* image_ref,
                  const CallOptions& options) {
  cri::PullImageResponse response;
  grpc::Status status = client.Call(client.ImagePath("PullImage"), request, &response, options);
  if (image_ref != nullptr) *image_ref = status.ok() ? response.image_ref() : "";
  return status;
}
}  // namespace

grpc::Status CriClient::PullImage(const std::string& image, const cri::AuthConfig* auth,
                                  std::string* image_ref, const CallOptions& options) {
  cri::PullImageRequest request;
  request.mutable_image()->set_image(image);
  if (auth != nullptr) *request.mutable_auth() = *auth;
  return Pull(*this, request, image_ref, options);
}

grpc::Status CriClient::PullImageForPod(const std::string& image, const std::string& pod_namespace,
                                        const cri::AuthConfig* auth, std::string* image_ref,
                                        const CallOptions& options) {
  cri::PullImageRequest request;
  request.mutable_image()->set_image(image);
  if (auth != nullptr) *request.mutable_auth() = *auth;
  auto* metadata = request.mutable_sandbox_config()->mutable_metadata();
  metadata->set_name("pod-1");
  metadata->set_uid("uid-1");
  metadata->set_namespace_(pod_namespace);
  return Pull(*this, request, image_ref, options);
}

grpc::Status CriClient::ImageStatus(const std::string& image, cri::ImageStatusResponse* response,
                                    const CallOptions& options) {
  cri::ImageStatusRequest request;
  request.mutable_image()->set_image(image);
  return Call(ImagePath("ImageStatus"), request, response, options);
}

grpc::Status CriClient::ListImages(const std::string& filter, cri::ListImagesResponse* response,
                                   const CallOptions& options) {
  cri::ListImagesRequest request;
  if (!filter.empty()) request.mutable_filter()->mutable_image()->set_image(filter);
  return Call(ImagePath("ListImages"), request, response, options);
}

grpc::Status CriClient::RemoveImage(const std::string& image, const CallOptions& options) {
  cri::RemoveImageRequest request;
  request.mutable_image()->set_image(image);
  cri::RemoveImageResponse response;
  return Call(ImagePath("RemoveImage"), request, &response, options);
}

std::optional<::imagecrishim::containerd::Image> CriClient::ImageRecord(const std::string& name,
                                                                        grpc::Status* status) {
  ::imagecrishim::containerd::GetImageRequest request;
  request.set_name(name);
  ::imagecrishim::containerd::GetImageResponse response;
  CallOptions options{.metadata = {{"containerd-namespace", "k8s.io"}},
                      .timeout = std::chrono::seconds(20)};
  grpc::Status result =
      Call("/containerd.services.images.v1.Images/Get", request, &response, options);
  if (status != nullptr) *status = result;
  if (!result.ok()) return std::nullopt;
  return response.image();
}

std::string CriClient::PulledAs(const std::string& name) {
  auto record = ImageRecord(name);
  if (!record) return "";
  auto it = record->labels().find("io.image-cri-shim.pulled-as");
  return it == record->labels().end() ? "" : it->second;
}

cri::AuthConfig MakeAuth(const std::string& username, const std::string& password) {
  cri::AuthConfig auth;
  auth.set_username(username);
  auth.set_password(password);
  return auth;
}

std::string StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "CODE_" + std::to_string(static_cast<int>(code));
  }
}

std::string Describe(const grpc::Status& status) {
  if (status.ok()) return "OK";
  return StatusCodeName(status.error_code()) + ": " + status.error_message();
}

}  // namespace shim::testing
