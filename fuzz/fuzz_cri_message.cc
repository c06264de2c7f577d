// Fuzz target: what the shim does to an intercepted image call's body, without the sockets:
// gRPC framing (relay/grpc_wire.h SingleMessage / FrameMessage), protobuf-lite parsing of the
// CRI request, the rewrite (image::Rewrite, as cri/image_service.cc applies it) and
// re-serialization.
// Input: byte 0 picks the method and byte 1 the way the body arrives (bit 0: the rest is a whole
// framed body; otherwise it is the message and gets framed here; bit 1: second configuration).
// Properties: framing round-trips; every rewritten request parses back with the new image name,
// the right credentials, and every field the shim does not know (unknown fields, at every level
// it touches) byte for byte as the caller sent it; rewritten names are valid references.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "config/loader.h"
#include "cri_image.pb.h"
#include "fuzz_check.h"
#include "image/reference.h"
#include "image/rewriter.h"
#include "relay/grpc_wire.h"

namespace pb = imagecrishim::cri;
namespace config = shim::config;
namespace image = shim::image;
namespace relay = shim::relay;

namespace {

const config::Config& TestConfig(int which) {
  static const config::ConfigPtr configs[2] = {
      config::ParseConfig(R"(address: https://mirror.example.com
auth: "mirror-user:mirror-password"
registries:
  - address: http://backup.example.com:5000/proxy-cache
    auth: "backup-user:backup-password"
  - address: https://quay-mirror.example.com
    prefixes: [quay.io/]
)",
                          "fuzz-1")
          .config,
      config::ParseConfig(R"(address: https://registry.example.com:8443/cache
registries:
  - address: docker.io
    auth: "hub:hub-password"
    prefixes: [docker.io/team/]
fallbackToOrigin: true
)",
                          "fuzz-2")
          .config};
  FUZZ_CHECK(configs[0] && configs[1], "test configurations do not load");
  return *configs[which];
}

// Protobuf-lite has no public unknown_fields(): with every known field cleared, what a message
// serializes to is exactly its unknown fields, as they were read.
template <typename Message, typename Clear>
std::string UnknownOf(const Message& message, Clear clear) {
  Message copy = message;
  clear(copy);
  return copy.SerializeAsString();
}
std::string Unknown(const pb::ImageSpec& m) {
  return UnknownOf(m, [](pb::ImageSpec& c) {
    c.clear_image();
    c.clear_annotations();
    c.clear_user_specified_image();
    c.clear_runtime_handler();
    c.clear_image_ref();
  });
}
std::string Unknown(const pb::AuthConfig& m) {
  return UnknownOf(m, [](pb::AuthConfig& c) {
    c.clear_username();
    c.clear_password();
    c.clear_auth();
    c.clear_server_address();
    c.clear_identity_token();
    c.clear_registry_token();
  });
}
std::string Unknown(const pb::PullImageRequest& m) {
  return UnknownOf(m, [](pb::PullImageRequest& c) {
    c.clear_image();
    c.clear_auth();
  });
}
std::string Unknown(const pb::ImageStatusRequest& m) {
  return UnknownOf(m, [](pb::ImageStatusRequest& c) {
    c.clear_image();
    c.clear_verbose();
  });
}
std::string Unknown(const pb::RemoveImageRequest& m) {
  return UnknownOf(m, [](pb::RemoveImageRequest& c) { c.clear_image(); });
}
std::string Unknown(const pb::ContainerConfig& m) {
  return UnknownOf(m, [](pb::ContainerConfig& c) { c.clear_image(); });
}
std::string Unknown(const pb::CreateContainerRequest& m) {
  return UnknownOf(m, [](pb::CreateContainerRequest& c) {
    c.clear_pod_sandbox_id();
    c.clear_config();
  });
}
std::string Unknown(const pb::Image& m) {
  return UnknownOf(m, [](pb::Image& c) {
    c.clear_id();
    c.clear_repo_tags();
    c.clear_repo_digests();
    c.clear_size();
    c.clear_spec();
  });
}

std::map<std::string, std::string> Annotations(const pb::ImageSpec& spec) {
  return {spec.annotations().begin(), spec.annotations().end()};
}

// Everything of an ImageSpec except `image` is kept.
void CheckSpecKept(const pb::ImageSpec& before, const pb::ImageSpec& after) {
  FUZZ_CHECK(Unknown(after) == Unknown(before), "ImageSpec unknown fields lost");
  FUZZ_CHECK(Annotations(after) == Annotations(before), "annotations changed");
  FUZZ_CHECK(after.user_specified_image() == before.user_specified_image() &&
                 after.runtime_handler() == before.runtime_handler() &&
                 after.image_ref() == before.image_ref(),
             "ImageSpec fields changed");
}

template <typename Message>
Message Reparse(const Message& message) {
  std::string bytes = message.SerializeAsString();
  // The shim frames what it sends; the runtime unframes it.
  std::string framed = relay::FrameMessage(bytes);
  auto unframed = relay::SingleMessage(framed);
  FUZZ_CHECK(unframed && *unframed == bytes, "framing does not round-trip");
  Message again;
  FUZZ_CHECK(again.ParseFromArray(unframed->data(), static_cast<int>(unframed->size())),
             "a serialized %s does not parse", again.GetTypeName().c_str());
  return again;
}

// The names the shim may send to the runtime for `name` (rewrite candidates), or none for ids
// and unparsable names, which go through untouched.
std::vector<image::Candidate> Candidates(const std::string& name, const config::Config& c) {
  if (name.empty() || image::LooksLikeImageId(name)) return {};
  auto reference = image::ParseReference(name);
  if (!reference.ok()) return {};
  auto candidates = image::Rewrite(*reference, c, image::PullScope{});
  FUZZ_CHECK(!candidates.empty(), "no candidate for \"%s\"", name.c_str());
  for (const auto& candidate : candidates) {
    auto parsed = image::ParseReference(candidate.image);
    FUZZ_CHECK(parsed.ok() || parsed.status().message().find("longer than") != std::string::npos,
               "\"%s\" rewritten to \"%s\", which is not a reference: %s", name.c_str(),
               candidate.image.c_str(), parsed.status().message().c_str());
  }
  return candidates;
}

void Pull(std::string_view message, const config::Config& c) {
  pb::PullImageRequest request;
  if (!request.ParseFromArray(message.data(), static_cast<int>(message.size()))) return;
  for (const auto& candidate : Candidates(request.image().image(), c)) {
    pb::PullImageRequest sent = request;  // as ImageService::TryNextCandidate builds it
    sent.mutable_image()->set_image(candidate.image);
    if (!candidate.is_origin()) {
      sent.clear_auth();
      if (!candidate.credentials.empty()) {
        sent.mutable_auth()->set_username(candidate.credentials.username);
        sent.mutable_auth()->set_password(candidate.credentials.password);
      }
    }
    pb::PullImageRequest got = Reparse(sent);
    FUZZ_CHECK(got.image().image() == candidate.image, "image not rewritten");
    FUZZ_CHECK(Unknown(got) == Unknown(request),
               "PullImageRequest unknown fields (sandbox_config) lost");
    CheckSpecKept(request.image(), got.image());
    if (candidate.is_origin()) {
      FUZZ_CHECK(got.auth().SerializeAsString() == request.auth().SerializeAsString(),
                 "the caller's credentials did not go to the origin");
    } else {
      FUZZ_CHECK(got.auth().username() == candidate.credentials.username &&
                     got.auth().password() == candidate.credentials.password &&
                     got.auth().auth().empty() && got.auth().identity_token().empty() &&
                     got.auth().registry_token().empty() && Unknown(got.auth()).empty(),
                 "the caller's credentials went to a configured registry");
    }
  }
}

void Status(std::string_view message, const config::Config& c) {
  pb::ImageStatusRequest request;
  if (!request.ParseFromArray(message.data(), static_cast<int>(message.size()))) return;
  for (const auto& candidate : Candidates(request.image().image(), c)) {
    pb::ImageStatusRequest lookup = request;
    lookup.mutable_image()->set_image(candidate.image);
    pb::ImageStatusRequest got = Reparse(lookup);
    FUZZ_CHECK(got.image().image() == candidate.image, "image not rewritten");
    FUZZ_CHECK(got.verbose() == request.verbose(), "verbose changed");
    FUZZ_CHECK(Unknown(got) == Unknown(request), "unknown fields lost");
    CheckSpecKept(request.image(), got.image());
  }
}

void Create(std::string_view message, const config::Config& c) {
  pb::CreateContainerRequest request;
  if (!request.ParseFromArray(message.data(), static_cast<int>(message.size()))) return;
  for (const auto& candidate : Candidates(request.config().image().image(), c)) {
    pb::CreateContainerRequest sent = request;
    sent.mutable_config()->mutable_image()->set_image(candidate.image);
    pb::CreateContainerRequest got = Reparse(sent);
    FUZZ_CHECK(got.config().image().image() == candidate.image, "image not rewritten");
    FUZZ_CHECK(got.pod_sandbox_id() == request.pod_sandbox_id(), "sandbox id changed");
    FUZZ_CHECK(Unknown(got) == Unknown(request), "unknown fields lost");
    FUZZ_CHECK(Unknown(got.config()) == Unknown(request.config()),
               "ContainerConfig unknown fields (metadata, command, mounts...) lost");
    CheckSpecKept(request.config().image(), got.config().image());
  }
}

void Remove(std::string_view message, const config::Config& c) {
  pb::RemoveImageRequest request;
  if (!request.ParseFromArray(message.data(), static_cast<int>(message.size()))) return;
  for (const auto& candidate : Candidates(request.image().image(), c)) {
    pb::RemoveImageRequest sent = request;
    sent.mutable_image()->set_image(candidate.image);
    pb::RemoveImageRequest got = Reparse(sent);
    FUZZ_CHECK(Unknown(got) == Unknown(request), "unknown fields lost");
    CheckSpecKept(request.image(), got.image());
  }
}

// A filtered ListImages is answered by the shim with the Image of an ImageStatus answer: here the
// bytes are that answer.
void List(std::string_view message) {
  pb::ImageStatusResponse status;
  if (!status.ParseFromArray(message.data(), static_cast<int>(message.size()))) return;
  pb::ListImagesResponse list;
  if (status.has_image()) *list.add_images() = status.image();
  pb::ListImagesResponse got = Reparse(list);
  FUZZ_CHECK(got.images_size() == (status.has_image() ? 1 : 0), "image count");
  if (status.has_image()) {
    const pb::Image& before = status.image();
    const pb::Image& after = got.images(0);
    FUZZ_CHECK(Unknown(after) == Unknown(before),
               "Image unknown fields (uid, username, pinned...) lost");
    FUZZ_CHECK(after.id() == before.id() && after.size() == before.size() &&
                   after.repo_tags_size() == before.repo_tags_size() &&
                   after.repo_digests_size() == before.repo_digests_size(),
               "Image fields changed");
    CheckSpecKept(before.spec(), after.spec());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t method = data[0];
  const uint8_t flags = data[1];
  std::string_view rest(reinterpret_cast<const char*>(data + 2), size - 2);

  std::string framed;
  std::string_view body = rest;
  if ((flags & 1) == 0) {
    framed = relay::FrameMessage(rest);
    body = framed;
  }
  auto message = relay::SingleMessage(body);
  if ((flags & 1) == 0) {
    FUZZ_CHECK(message && *message == rest, "FrameMessage/SingleMessage do not round-trip");
  }
  if (!message) return 0;  // not one plain message: relayed untouched

  const config::Config& c = TestConfig((flags >> 1) & 1);
  switch (method % 5) {
    case 0:
      Pull(*message, c);
      break;
    case 1:
      Status(*message, c);
      break;
    case 2:
      Create(*message, c);
      break;
    case 3:
      Remove(*message, c);
      break;
    default:
      List(*message);
      break;
  }
  return 0;
}
