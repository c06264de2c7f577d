// A small CRI client for tests and tools: unary calls over a unix socket through
// grpc::GenericStub (raw bytes and a method path, no service code generation), with typed
// helpers on the project's own protobuf-lite messages (src/cri/cri_image.proto, namespace
// imagecrishim::cri; extra runtime messages in tests/support/cri_runtime_test.proto).
// Thread-safe: one client may serve calls from several threads at once. Calls block the caller.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/support/status.h>

#include "containerd_images.pb.h"
#include "cri_image.pb.h"

namespace google::protobuf {
class MessageLite;
}

namespace shim::testing {

namespace cri = ::imagecrishim::cri;

struct CallOptions {
  std::vector<std::pair<std::string, std::string>> metadata = {};  // sent as client metadata
  std::optional<std::chrono::milliseconds> timeout = {};           // deadline; none by default
  bool wait_for_ready = false;  // queue the call until the socket is there (until the deadline)
  // Cancels the call (RST_STREAM CANCEL, no deadline involved) if no answer came by then.
  std::optional<std::chrono::milliseconds> cancel_after = {};
};

// What the server sent besides the message (filled when the caller asks for it).
struct CallMetadata {
  std::multimap<std::string, std::string> initial;
  std::multimap<std::string, std::string> trailing;
};

class CriClient {
 public:
  // `api` ("v1" or "v1alpha2") picks the method paths of the typed helpers. The channel
  // connects lazily, reconnects quickly (backoff 100 ms - 1 s) and takes answers up to 16 MiB.
  explicit CriClient(const std::string& socket_path, std::string api = "v1");
  ~CriClient();
  CriClient(const CriClient&) = delete;
  CriClient& operator=(const CriClient&) = delete;

  const std::string& api() const { return api_; }
  const std::string& socket_path() const { return socket_path_; }

  // "/runtime.<api>.ImageService/<method>" and "/runtime.<api>.RuntimeService/<method>".
  std::string ImagePath(const std::string& method) const;
  std::string RuntimePath(const std::string& method) const;

  // One unary call of any method with raw message bytes.
  grpc::Status Call(const std::string& path, const std::string& request, std::string* response,
                    const CallOptions& options = {}, CallMetadata* metadata = nullptr);
  // The same with messages; a response that does not parse is INTERNAL.
  grpc::Status Call(const std::string& path, const google::protobuf::MessageLite& request,
                    google::protobuf::MessageLite* response, const CallOptions& options = {},
                    CallMetadata* metadata = nullptr);

  // RuntimeService/Version over `api` ("v1" or "v1alpha2"), whatever api() is.
  grpc::Status Version(const std::string& api, cri::VersionResponse* response,
                       const CallOptions& options = {});
  // ImageService calls over api(). `auth` nullptr = no credentials.
  grpc::Status PullImage(const std::string& image, const cri::AuthConfig* auth,
                         std::string* image_ref = nullptr, const CallOptions& options = {});
  // The pull kubelet makes for a pod in `pod_namespace`: with the pod's sandbox config.
  grpc::Status PullImageForPod(const std::string& image, const std::string& pod_namespace,
                               const cri::AuthConfig* auth, std::string* image_ref = nullptr,
                               const CallOptions& options = {});
  grpc::Status ImageStatus(const std::string& image, cri::ImageStatusResponse* response,
                           const CallOptions& options = {});
  // `filter` "" lists every image.
  grpc::Status ListImages(const std::string& filter, cri::ListImagesResponse* response,
                          const CallOptions& options = {});
  grpc::Status RemoveImage(const std::string& image, const CallOptions& options = {});

  // containerd's own image record `name` in the CRI plugin's namespace (k8s.io), through its
  // image service (containerd.services.images.v1.Images/Get) on the same socket; nullopt when
  // there is none. Other failures are returned in `status` when given (else they read as none).
  std::optional<::imagecrishim::containerd::Image> ImageRecord(const std::string& name,
                                                               grpc::Status* status = nullptr);
  // Where the shim pulled the image held under `name` from (its label
  // io.image-cri-shim.pulled-as), or "" when the record has no such label or does not exist.
  std::string PulledAs(const std::string& name);

 private:
  struct Impl;
  std::string socket_path_;
  std::string api_;
  std::unique_ptr<Impl> impl_;
};

// AuthConfig with username and password set.
cri::AuthConfig MakeAuth(const std::string& username, const std::string& password);

// "NOT_FOUND", "UNKNOWN", ... for messages.
std::string StatusCodeName(grpc::StatusCode code);
// "NOT_FOUND: <message>".
std::string Describe(const grpc::Status& status);

}  // namespace shim::testing
