#include "cri/image_service.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "cri/method.h"
#include "cri/pull_failure.h"
#include "cri_image.pb.h"
#include "image/reference.h"
#include "image/rewriter.h"
#include "util/log.h"

namespace shim::cri {

namespace pb = imagecrishim::cri;
using relay::GrpcCode;
using relay::InterceptedCall;
using relay::UnaryResult;

namespace {

std::string Seconds(std::chrono::steady_clock::duration d) {
  return fmt::format("{:.1f}s", std::chrono::duration<double>(d).count());
}

std::string Millis(std::chrono::steady_clock::duration d) {
  return fmt::format("{:.1f}ms", std::chrono::duration<double, std::milli>(d).count());
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

const std::string kOriginLabel = "origin";

std::string_view PullFailureLabel(PullFailure failure) {
  switch (failure) {
    case PullFailure::kImageAbsent:
      return "image_absent";
    case PullFailure::kRegistryDown:
      return "registry_down";
    case PullFailure::kAuthRejected:
      return "credentials_rejected";
    case PullFailure::kInvalidReference:
      return "invalid_reference";
    case PullFailure::kOther:
      return "failed";
  }
  return "failed";
}

bool HasImage(const UnaryResult& answer) {
  auto message = answer.Message();
  if (!answer.ok() || !message) return false;
  pb::ImageStatusResponse response;
  return response.ParseFromArray(message->data(), static_cast<int>(message->size())) &&
         response.has_image();
}

}  // namespace

struct ImageService::PullAttempt {
  std::string key;        // in pulls_
  std::string requested;  // as the first caller sent it
  std::string reference;  // normalised, for ImageLocations
  std::string path;
  relay::Headers headers;  // the first caller's, for the runtime calls
  relay::EventLoop* loop = nullptr;
  relay::UpstreamPool* pool = nullptr;
  pb::PullImageRequest request;
  // The snapshot the pull started with: candidates index its registries, so every try, health
  // mark and metric label reads this one, never a configuration reloaded since.
  config::ConfigPtr config;
  std::vector<image::Candidate> candidates;
  size_t next = 0;
  std::vector<std::shared_ptr<InterceptedCall>> callers;
  std::shared_ptr<relay::UnaryCall> current;
  std::vector<std::string> failures;
  bool all_absent = true;
  int last_code = static_cast<int>(GrpcCode::kUnknown);
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  relay::EventLoop::TimerId timer = 0;
  bool done = false;
};

struct ImageService::Resolution {
  std::shared_ptr<InterceptedCall> call;
  std::string key;  // the normalised name asked for, to remember where it was found
  std::string status_path;
  std::vector<std::string> names;
  size_t next = 0;
  std::function<std::string(const std::string&)> make_request;
  Resolved done;
};

ImageService::ImageService(ConfigSource config, registry::RegistryHealth* health,
                           PullObserver* observer)
    : config_(std::move(config)), health_(health), observer_(observer) {}
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
  pb::PullImageRequest request;
  if (!request.ParseFromArray(message.data(), static_cast<int>(message.size()))) {
    return call->ReplyByRelaying();
  }
  std::string requested = request.image().image();
  auto reference = image::ParseReference(requested);
  if (image::LooksLikeImageId(requested) || !reference.ok()) {
    return call->ReplyByRelaying();  // the runtime's own error explains a bad name best
  }
  // Same image and same caller credentials: the same pull. Credentials stay in memory only.
  std::string key = reference->String() + '\n' + request.auth().SerializeAsString();
  auto [it, inserted] = pulls_.try_emplace(key);
  if (!inserted) {
    auto attempt = it->second;
    attempt->callers.push_back(call);
    call->OnCancelled([this, attempt, raw = call.get()] { OnPullCallerGone(attempt, raw); });
    spdlog::debug("pull {} joins the one under way", requested);
    return;
  }
  auto attempt = std::make_shared<PullAttempt>();
  it->second = attempt;
  attempt->key = key;
  attempt->requested = requested;
  attempt->reference = reference->String();
  attempt->path = call->path();
  attempt->headers = call->request_headers();
  attempt->loop = &call->loop();
  attempt->pool = &call->pool();
  attempt->request = std::move(request);
  attempt->config = config;
  attempt->candidates = image::Rewrite(*reference, *config);
  if (health_ != nullptr) {
    // Registries known to be down go last: still tried if nothing else works.
    std::stable_partition(
        attempt->candidates.begin(), attempt->candidates.end(), [&](const image::Candidate& c) {
          return c.is_origin() || !health_->IsDown(config->registries[c.registry_index].address);
        });
  }
  attempt->callers.push_back(call);
  call->OnCancelled([this, attempt, raw = call.get()] { OnPullCallerGone(attempt, raw); });
  std::weak_ptr<PullAttempt> weak = attempt;
  attempt->timer = attempt->loop->AddTimer(config->timeout, [this, weak,
                                                             timeout = config->timeout] {
    auto attempt = weak.lock();
    if (!attempt || attempt->done) return;
    attempt->timer = 0;
    auto seconds = std::chrono::duration_cast<std::chrono::seconds>(timeout).count();
    spdlog::warn("pull {} timed out after {}s", attempt->requested, seconds);
    FinishPull(attempt, nullptr, GrpcCode::kDeadlineExceeded,
               fmt::format("image-cri-shim: pull of {} did not finish within the timeout ({}s); "
                           "tried: {}",
                           attempt->requested, seconds,
                           attempt->failures.empty()
                               ? std::string("nothing finished")
                               : fmt::format("{}", fmt::join(attempt->failures, "; "))));
  });
  TryNextCandidate(std::move(attempt));
}

void ImageService::OnPullCallerGone(const std::shared_ptr<PullAttempt>& attempt,
                                    const InterceptedCall* call) {
  auto& callers = attempt->callers;
  callers.erase(std::remove_if(callers.begin(), callers.end(),
                               [&](const auto& c) { return c.get() == call; }),
                callers.end());
  if (!callers.empty() || attempt->done) return;
  // Nobody waits any more: the runtime's pull is cancelled and nothing more is tried.
  spdlog::info("pull {} cancelled by the caller after {}", attempt->requested,
               Seconds(std::chrono::steady_clock::now() - attempt->start));
  FinishPull(attempt, nullptr, GrpcCode::kCancelled, "cancelled");
}

void ImageService::TryNextCandidate(std::shared_ptr<PullAttempt> attempt) {
  if (attempt->done) return;
  if (attempt->next == attempt->candidates.size()) {
    GrpcCode code =
        attempt->all_absent ? GrpcCode::kNotFound : static_cast<GrpcCode>(attempt->last_code);
    spdlog::warn("pull {} failed on every registry: {}", attempt->requested,
                 fmt::join(attempt->failures, "; "));
    return FinishPull(attempt, nullptr, code,
                      fmt::format("image-cri-shim: pull of {} failed on every registry: {}",
                                  attempt->requested, fmt::join(attempt->failures, "; ")));
  }
  const config::Config& config = *attempt->config;
  const image::Candidate& candidate = attempt->candidates[attempt->next++];
  std::string registry_address = candidate.is_origin()
                                     ? std::string()
                                     : config.registries.at(candidate.registry_index).address;
  pb::PullImageRequest request = attempt->request;
  request.mutable_image()->set_image(candidate.image);
  ApplyCredentials(request, candidate);
  relay::Headers headers = attempt->headers;
  auto started = std::chrono::steady_clock::now();
  attempt->current = relay::UnaryCall::Start(
      *attempt->loop, *attempt->pool, headers, relay::FrameMessage(request.SerializeAsString()),
      [this, attempt, &candidate, registry_address, started](UnaryResult answer) {
        attempt->current = nullptr;
        if (attempt->done) return;
        auto took = std::chrono::steady_clock::now() - started;
        const std::string& label = registry_address.empty() ? kOriginLabel : registry_address;
        if (answer.ok()) {
          if (observer_ != nullptr) observer_->OnPullResult(label, "ok");
          if (health_ != nullptr && !registry_address.empty()) health_->MarkUp(registry_address);
          locations_.Remember(attempt->reference, candidate.image);
          spdlog::info("pull {} -> {} via {}: ok {}", attempt->requested, candidate.image,
                       candidate.registry, Seconds(took));
          return FinishPull(attempt, &answer, GrpcCode::kOk, "");
        }
        if (!answer.answered) {
          // The runtime itself is out of reach: no registry is to blame, nothing else to try.
          spdlog::warn("pull {} failed: {}", attempt->requested, answer.message);
          return FinishPull(attempt, &answer, GrpcCode::kOk, "");
        }
        PullFailure failure = ClassifyPullFailure(answer.code, answer.message);
        if (observer_ != nullptr) observer_->OnPullResult(label, PullFailureLabel(failure));
        spdlog::warn("pull {} -> {} via {}: {} after {} error={}", attempt->requested,
                     candidate.image, candidate.registry, PullFailureName(failure), Seconds(took),
                     log::Quoted(Shorten(answer.message)));
        if (failure == PullFailure::kInvalidReference) {
          return FinishPull(attempt, &answer, GrpcCode::kOk, "");
        }
        if (health_ != nullptr && !registry_address.empty()) {
          if (failure == PullFailure::kRegistryDown) {
            health_->MarkDown(registry_address, Shorten(answer.message));
          } else if (failure == PullFailure::kAuthRejected &&
                     health_->NoteCredentialsRejected(registry_address)) {
            spdlog::error(
                "registry rejected the shim's credentials registry={} user={}; fix its "
                "`auth`",
                registry_address,
                candidate.credentials.username.empty() ? "(anonymous)"
                                                       : candidate.credentials.username);
          }
        }
        attempt->all_absent = attempt->all_absent && failure == PullFailure::kImageAbsent;
        attempt->last_code = answer.code;
        attempt->failures.push_back(fmt::format("{} via {}: {} ({})", candidate.image,
                                                candidate.registry, PullFailureName(failure),
                                                Shorten(answer.message)));
        if (observer_ != nullptr && attempt->next < attempt->candidates.size()) {
          observer_->OnFailover();
        }
        TryNextCandidate(attempt);
      });
}

void ImageService::FinishPull(const std::shared_ptr<PullAttempt>& attempt,
                              const UnaryResult* answer, GrpcCode code,
                              const std::string& message) {
  if (attempt->done) return;
  attempt->done = true;
  if (attempt->timer != 0) attempt->loop->Cancel(attempt->timer);
  attempt->timer = 0;
  if (attempt->current) {
    auto current = std::move(attempt->current);
    current->Cancel();  // its answer no longer matters: `done` above ignores it
  }
  auto it = pulls_.find(attempt->key);
  if (it != pulls_.end() && it->second == attempt) pulls_.erase(it);
  auto callers = std::move(attempt->callers);
  for (auto& call : callers) {
    if (answer != nullptr) {
      call->Reply(*answer);
    } else {
      call->ReplyError(code, message);
    }
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
  // The name as given is always last; an id is not remembered (it resolves to itself).
  const std::string& given = resolution->names.back();
  if (auto reference = image::ParseReference(given);
      reference.ok() && !image::LooksLikeImageId(given)) {
    resolution->key = reference->String();
  }
  ResolveStep(std::move(resolution));
}

void ImageService::ResolveStep(std::shared_ptr<Resolution> resolution) {
  const std::string& name = resolution->names[resolution->next++];
  resolution->call->CallRuntime(
      resolution->status_path, resolution->make_request(name),
      [this, resolution, &name](UnaryResult answer) {
        if (resolution->call->finished()) return;
        if (HasImage(answer)) {
          // Next time the first call hits, whoever pulled the image (the shim or not).
          if (!resolution->key.empty()) locations_.Remember(resolution->key, name);
          return resolution->done(name, std::move(answer));
        }
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
      [call, requested, start = std::chrono::steady_clock::now()](std::optional<std::string> stored,
                                                                  UnaryResult answer) {
        auto took = std::chrono::steady_clock::now() - start;
        // Kubelet asks for the status of an image before every container start: an answer is
        // routine (debug); only a failed lookup is worth a line at the default level.
        if (stored) {
          spdlog::debug("status {} -> {}: present {}", requested, *stored, Millis(took));
        } else if (answer.ok()) {
          spdlog::debug("status {}: absent {}", requested, Millis(took));
        } else {
          spdlog::info("status {}: {} {} error={}", requested, relay::GrpcCodeName(answer.code),
                       Millis(took), log::Quoted(Shorten(answer.message)));
        }
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
  pb::ListImagesRequest request;
  if (!request.ParseFromArray(message.data(), static_cast<int>(message.size()))) {
    return call->ReplyByRelaying();
  }
  const std::string& filter = request.filter().image().image();
  if (filter.empty()) return call->ReplyByRelaying();  // the whole list is the runtime's
  // containerd 1.6 ignores the filter and lists everything, so the shim answers a filtered
  // list itself: the one image the name resolves to, or none.
  auto names = image::LooksLikeImageId(filter) ? std::vector<std::string>{filter}
                                               : LookupNames(filter, *config);
  if (names.empty()) return call->ReplyByRelaying();
  Resolve(call, ImageServicePath(version, "ImageStatus"), std::move(names), PlainStatusRequest(),
          [call](std::optional<std::string> stored, UnaryResult answer) {
            if (!answer.ok()) return call->Reply(answer);
            pb::ListImagesResponse list;
            if (stored) {
              pb::ImageStatusResponse status;
              auto message = answer.Message();
              if (message &&
                  status.ParseFromArray(message->data(), static_cast<int>(message->size()))) {
                *list.add_images() = status.image();  // unknown fields travel with it
              }
            }
            call->ReplyMessage(list.SerializeAsString());
          });
}

void ImageService::CreateContainer(std::shared_ptr<InterceptedCall> call, std::string_view version,
                                   std::string_view message, config::ConfigPtr config) {
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
