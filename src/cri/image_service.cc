#include "cri/image_service.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "cri/method.h"
#include "cri/pull_failure.h"
#include "cri_image.pb.h"
#include "image/reference.h"
#include "image/rewriter.h"

namespace shim::cri {

namespace pb = imagecrishim::cri;
using relay::GrpcCode;
using relay::InterceptedCall;
using relay::UnaryResult;

namespace {

std::string Seconds(std::chrono::steady_clock::duration d) {
  return fmt::format("{:.1f}s", std::chrono::duration<double>(d).count());
}

// Runtime messages can be long; an aggregated error keeps each one readable.
std::string Shorten(const std::string& text) {
  constexpr size_t kMax = 300;
  return text.size() <= kMax ? text : text.substr(0, kMax) + "...";
}

// Credentials for one candidate: a configured registry's own, or, for the image's own
// registry, what kubelet sent (which belongs to that registry and nowhere else).
void ApplyCredentials(pb::PullImageRequest& request, const image::Candidate& candidate) {
  if (candidate.is_origin()) return;
  request.clear_auth();
  if (!candidate.credentials.empty()) {
    request.mutable_auth()->set_username(candidate.credentials.username);
    request.mutable_auth()->set_password(candidate.credentials.password);
  }
}

bool HasImage(const UnaryResult& answer) {
  auto message = answer.Message();
  if (!answer.ok() || !message) return false;
  pb::ImageStatusResponse response;
  return response.ParseFromArray(message->data(), static_cast<int>(message->size())) &&
         response.has_image();
}

}  // namespace

struct ImageService::PullState {
  std::shared_ptr<InterceptedCall> call;
  std::string path;
  pb::PullImageRequest request;
  std::string requested;  // as kubelet sent it
  std::string key;        // normalised, for ImageLocations
  std::vector<image::Candidate> candidates;
  size_t next = 0;
  std::vector<std::string> failures;
  bool all_absent = true;
  int last_code = static_cast<int>(GrpcCode::kUnknown);
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  relay::EventLoop::TimerId timer = 0;
  bool timed_out = false;
};

struct ImageService::Resolution {
  std::shared_ptr<InterceptedCall> call;
  std::string status_path;
  std::vector<std::string> names;
  size_t next = 0;
  std::function<std::string(const std::string&)> make_request;
  Resolved done;
};

ImageService::ImageService(ConfigSource config) : config_(std::move(config)) {}
ImageService::~ImageService() = default;

bool ImageService::Intercepts(std::string_view path) const {
  return ParseMethodPath(path).has_value();
}

void ImageService::Handle(std::shared_ptr<InterceptedCall> call) {
  auto method = ParseMethodPath(call->path());
  auto message = call->request_message();
  if (!method || !message) {  // compressed or malformed: the runtime judges it as it came
    call->ReplyByRelaying();
    return;
  }
  config::ConfigPtr config = config_();  // one snapshot for the whole call
  switch (method->method) {
    case ImageMethod::kPullImage:
      return Pull(std::move(call), method->version, *message, std::move(config));
    case ImageMethod::kImageStatus:
      return Status(std::move(call), method->version, *message, std::move(config));
    case ImageMethod::kRemoveImage:
      return Remove(std::move(call), method->version, *message, std::move(config));
    case ImageMethod::kListImages:
      return List(std::move(call), method->version, *message, std::move(config));
    case ImageMethod::kCreateContainer:
      return CreateContainer(std::move(call), method->version, *message, std::move(config));
  }
}

// --- PullImage ---

void ImageService::Pull(std::shared_ptr<InterceptedCall> call, std::string_view,
                        std::string_view message, config::ConfigPtr config) {
  auto state = std::make_shared<PullState>();
  if (!state->request.ParseFromArray(message.data(), static_cast<int>(message.size()))) {
    call->ReplyByRelaying();
    return;
  }
  state->requested = state->request.image().image();
  auto reference = image::ParseReference(state->requested);
  if (image::LooksLikeImageId(state->requested) || !reference.ok()) {
    call->ReplyByRelaying();  // the runtime's own error explains a bad name best
    return;
  }
  state->call = call;
  state->path = call->path();
  state->key = reference->String();
  state->candidates = image::Rewrite(*reference, *config);
  std::weak_ptr<PullState> weak = state;
  state->timer = call->loop().AddTimer(config->timeout, [this, weak, timeout = config->timeout] {
    auto state = weak.lock();
    if (!state || state->call->finished()) return;
    state->timed_out = true;
    state->call->CancelRuntimeCalls();
    spdlog::warn("pull {} timed out after {}s", state->requested,
                 std::chrono::duration_cast<std::chrono::seconds>(timeout).count());
    state->call->ReplyError(
        GrpcCode::kDeadlineExceeded,
        fmt::format("pull of {} did not finish within the shim's timeout ({}s); tried: {}",
                    state->requested,
                    std::chrono::duration_cast<std::chrono::seconds>(timeout).count(),
                    fmt::join(state->failures, "; ")));
  });
  TryNextCandidate(std::move(state));
}

void ImageService::TryNextCandidate(std::shared_ptr<PullState> state) {
  if (state->call->finished()) return FinishPull(state);
  if (state->next == state->candidates.size()) {
    GrpcCode code = state->all_absent ? GrpcCode::kNotFound
                                      : static_cast<GrpcCode>(state->last_code);
    spdlog::warn("pull {} failed: {}", state->requested, fmt::join(state->failures, "; "));
    state->call->ReplyError(code, fmt::format("image-cri-shim: pull of {} failed on every "
                                              "registry: {}",
                                              state->requested,
                                              fmt::join(state->failures, "; ")));
    return FinishPull(state);
  }
  const image::Candidate& candidate = state->candidates[state->next++];
  pb::PullImageRequest request = state->request;
  request.mutable_image()->set_image(candidate.image);
  ApplyCredentials(request, candidate);
  auto started = std::chrono::steady_clock::now();
  state->call->CallRuntime(
      state->path, request.SerializeAsString(),
      [this, state, &candidate, started](UnaryResult answer) {
        if (state->timed_out || state->call->finished()) return FinishPull(state);
        auto took = std::chrono::steady_clock::now() - started;
        if (answer.ok()) {
          locations_.Remember(state->key, candidate.image);
          spdlog::info("pull {} -> {} via {}: ok {}", state->requested, candidate.image,
                       candidate.registry, Seconds(took));
          state->call->Reply(answer);
          return FinishPull(state);
        }
        if (!answer.answered) {
          // The runtime itself is out of reach: no registry is to blame, nothing else to try.
          spdlog::warn("pull {} failed: {}", state->requested, answer.message);
          state->call->Reply(answer);
          return FinishPull(state);
        }
        PullFailure failure = ClassifyPullFailure(answer.code, answer.message);
        spdlog::warn("pull {} -> {} via {}: {} after {} error=\"{}\"", state->requested,
                     candidate.image, candidate.registry, PullFailureName(failure),
                     Seconds(took), Shorten(answer.message));
        if (failure == PullFailure::kInvalidReference) {
          state->call->Reply(answer);
          return FinishPull(state);
        }
        state->all_absent = state->all_absent && failure == PullFailure::kImageAbsent;
        state->last_code = answer.code;
        state->failures.push_back(fmt::format("{} via {}: {} ({})", candidate.image,
                                              candidate.registry, PullFailureName(failure),
                                              Shorten(answer.message)));
        TryNextCandidate(state);
      });
}

void ImageService::FinishPull(const std::shared_ptr<PullState>& state) {
  if (state->timer != 0) {
    state->call->loop().Cancel(state->timer);
    state->timer = 0;
  }
}

// --- name resolution for status, remove, list and create ---

std::vector<std::string> ImageService::LookupNames(const std::string& image,
                                                   const config::Config& config) {
  std::vector<std::string> names;
  if (image.empty() || image::LooksLikeImageId(image)) return names;
  auto reference = image::ParseReference(image);
  if (!reference.ok()) return names;
  auto add = [&](const std::string& name) {
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  };
  if (auto stored = locations_.Find(reference->String())) add(*stored);
  for (const auto& candidate : image::Rewrite(*reference, config)) add(candidate.image);
  add(image);  // the name as given, last
  return names;
}

void ImageService::Resolve(std::shared_ptr<InterceptedCall> call, std::string status_path,
                           std::vector<std::string> names,
                           std::function<std::string(const std::string&)> make_request,
                           Resolved done) {
  auto resolution = std::make_shared<Resolution>();
  resolution->call = std::move(call);
  resolution->status_path = std::move(status_path);
  resolution->names = std::move(names);
  resolution->make_request = std::move(make_request);
  resolution->done = std::move(done);
  ResolveStep(std::move(resolution));
}

void ImageService::ResolveStep(std::shared_ptr<Resolution> resolution) {
  const std::string& name = resolution->names[resolution->next++];
  resolution->call->CallRuntime(
      resolution->status_path, resolution->make_request(name),
      [this, resolution, &name](UnaryResult answer) {
        if (resolution->call->finished()) return;
        if (HasImage(answer)) return resolution->done(name, std::move(answer));
        // An error ends the search: it is the runtime's answer to give.
        if (!answer.ok() || resolution->next == resolution->names.size()) {
          return resolution->done(std::nullopt, std::move(answer));
        }
        ResolveStep(resolution);
      });
}

namespace {
std::function<std::string(const std::string&)> PlainStatusRequest() {
  return [](const std::string& name) {
    pb::ImageStatusRequest request;
    request.mutable_image()->set_image(name);
    return request.SerializeAsString();
  };
}
}  // namespace

void ImageService::Status(std::shared_ptr<InterceptedCall> call, std::string_view version,
                          std::string_view message, config::ConfigPtr config) {
  pb::ImageStatusRequest request;
  if (!request.ParseFromArray(message.data(), static_cast<int>(message.size()))) {
    return call->ReplyByRelaying();
  }
  auto names = LookupNames(request.image().image(), *config);
  if (names.empty()) return call->ReplyByRelaying();
  std::string requested = request.image().image();
  Resolve(
      call, ImageServicePath(version, "ImageStatus"), std::move(names),
      [request](const std::string& name) {
        pb::ImageStatusRequest lookup = request;  // kubelet's own request, verbose and all
        lookup.mutable_image()->set_image(name);
        return lookup.SerializeAsString();
      },
      [call, requested](std::optional<std::string> stored, UnaryResult answer) {
        spdlog::debug("status image={} stored_as={}", requested, stored.value_or("(absent)"));
        call->Reply(answer);
      });
}

void ImageService::Remove(std::shared_ptr<InterceptedCall> call, std::string_view version,
                          std::string_view message, config::ConfigPtr config) {
  auto request = std::make_shared<pb::RemoveImageRequest>();
  if (!request->ParseFromArray(message.data(), static_cast<int>(message.size()))) {
    return call->ReplyByRelaying();
  }
  auto names = LookupNames(request->image().image(), *config);
  if (names.empty()) return call->ReplyByRelaying();
  std::string requested = request->image().image();
  std::string path = call->path();
  Resolve(call, ImageServicePath(version, "ImageStatus"), std::move(names), PlainStatusRequest(),
          [this, call, request, requested, path](std::optional<std::string> stored,
                                                 UnaryResult answer) {
            if (!stored) {
              if (!answer.ok()) return call->Reply(answer);
              return call->ReplyByRelaying();  // absent everywhere: the runtime says so
            }
            if (auto reference = image::ParseReference(requested); reference.ok()) {
              locations_.Forget(reference->String());
            }
            spdlog::info("remove {} -> {}", requested, *stored);
            request->mutable_image()->set_image(*stored);
            call->CallRuntime(path, request->SerializeAsString(),
                              [call](UnaryResult result) { call->Reply(result); });
          });
}

void ImageService::List(std::shared_ptr<InterceptedCall> call, std::string_view version,
                        std::string_view message, config::ConfigPtr config) {
  auto request = std::make_shared<pb::ListImagesRequest>();
  if (!request->ParseFromArray(message.data(), static_cast<int>(message.size()))) {
    return call->ReplyByRelaying();
  }
  auto names = LookupNames(request->filter().image().image(), *config);
  if (names.empty()) return call->ReplyByRelaying();  // no filter by name: nothing to resolve
  std::string path = call->path();
  Resolve(call, ImageServicePath(version, "ImageStatus"), std::move(names), PlainStatusRequest(),
          [call, request, path](std::optional<std::string> stored, UnaryResult answer) {
            if (!stored) {
              if (!answer.ok()) return call->Reply(answer);
              return call->ReplyByRelaying();
            }
            request->mutable_filter()->mutable_image()->set_image(*stored);
            call->CallRuntime(path, request->SerializeAsString(),
                              [call](UnaryResult result) { call->Reply(result); });
          });
}

void ImageService::CreateContainer(std::shared_ptr<InterceptedCall> call,
                                   std::string_view version, std::string_view message,
                                   config::ConfigPtr config) {
  auto request = std::make_shared<pb::CreateContainerRequest>();
  if (!request->ParseFromArray(message.data(), static_cast<int>(message.size()))) {
    return call->ReplyByRelaying();
  }
  // kubelet normally names the image by id here; only a name needs resolving.
  auto names = LookupNames(request->config().image().image(), *config);
  if (names.empty()) return call->ReplyByRelaying();
  std::string path = call->path();
  Resolve(call, ImageServicePath(version, "ImageStatus"), std::move(names), PlainStatusRequest(),
          [call, request, path](std::optional<std::string> stored, UnaryResult answer) {
            if (!stored) {
              if (!answer.ok()) return call->Reply(answer);
              return call->ReplyByRelaying();
            }
            request->mutable_config()->mutable_image()->set_image(*stored);
            call->CallRuntime(path, request->SerializeAsString(),
                              [call](UnaryResult result) { call->Reply(result); });
          });
}

}  // namespace shim::cri
