#include "cri/image_service.h"

#include <spdlog/spdlog.h>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include <chrono>
#include <type_traits>

#include "config/loader.h"
#include "cri/image_names.h"
#include "cri/image_records.h"
#include "cri/method.h"
#include "cri/pull_failure.h"
#include "cri/requested_name.h"
#include "cri_image.pb.h"
#include "image/policy.h"
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

// Whether an ImageStatus answer holds an image: its field 1 is there. Read off the wire without
// decoding the image (tags, digests, labels...), which kubelet's status call before every
// container start would otherwise pay for.
bool HasImage(const UnaryResult& answer) {
  auto message = answer.Message();
  if (!answer.ok() || !message) return false;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(message->data()),
                                            static_cast<int>(message->size()));
  constexpr int kImageField = pb::ImageStatusResponse::kImageFieldNumber;
  while (uint32_t tag = in.ReadTag()) {
    if (google::protobuf::internal::WireFormatLite::GetTagFieldNumber(tag) == kImageField) {
      return true;
    }
    if (!google::protobuf::internal::WireFormatLite::SkipField(&in, tag)) return false;
  }
  return false;
}

std::function<std::string(const std::string&)> PlainStatusRequest() {
  return [](const std::string& name) {
    pb::ImageStatusRequest request;
    request.mutable_image()->set_image(name);
    return request.SerializeAsString();
  };
}

}  // namespace

struct ImageService::PullAttempt {
  std::string key;          // in pulls_
  std::string requested;    // as the first caller sent it
  std::string reference;    // normalised, for ImageLocations
  std::string record_name;  // the runtime's record naming it (image_names.h RecordNameOf)
  std::string path;
  std::string status_path;  // ImageStatus in the caller's API version
  relay::Headers headers;   // the first caller's, for the runtime calls
  relay::EventLoop* loop = nullptr;
  relay::UpstreamPool* pool = nullptr;
  pb::PullImageRequest request;
  // The snapshot the pull started with: candidates index its registries, so every try, health
  // mark and metric label reads this one, never a configuration reloaded since.
  config::ConfigPtr config;
  std::vector<image::Candidate> candidates;
  size_t next = 0;
  std::vector<std::shared_ptr<InterceptedCall>> callers;
  std::vector<OwnPullDone> waiters;  // the shim's own pulls (prePull) waiting on this one
  std::shared_ptr<relay::UnaryCall> current;
  std::vector<std::string> failures;
  std::string last_failure = "failed";  // PullFailureLabel of the last candidate that failed
  bool all_absent = true;
  int last_code = static_cast<int>(GrpcCode::kUnknown);
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  relay::EventLoop::TimerId timer = 0;
  bool done = false;
};

struct ImageService::Resolution {
  RuntimeCaller runtime;
  std::string key;           // the normalised name asked for, to remember where it was found
  std::string given;         // the name as the caller sent it
  bool given_early = false;  // asked first, before any remembered name (imageNames: requested)
  std::string status_path;
  std::vector<std::string> names;
  size_t next = 0;
  std::function<std::string(const std::string&)> make_request;
  Resolved done;
};

ImageService::ImageService(ConfigSource config, registry::RegistryHealth* health,
                           PullObserver* observer)
    : config_(std::move(config)),
      health_(health),
      observer_(observer),
      image_names_seen_(config_()->image_names) {}
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

void ImageService::Pull(std::shared_ptr<InterceptedCall> call, std::string_view version,
                        std::string_view message, config::ConfigPtr config) {
  pb::PullImageRequest request;
  if (!request.ParseFromArray(message.data(), static_cast<int>(message.size()))) {
    return call->ReplyByRelaying();
  }
  std::string requested = request.image().image();
  auto reference = image::ParseReference(requested);
  if (image::LooksLikeImageId(requested) || !reference.ok()) {
    // The runtime's own error explains a bad name best; but with a pull policy in force, a name
    // the policy cannot judge is not let through (containerd reads "sha256:<hex>" as a tag of
    // docker.io/library/sha256, for one).
    if (auto refusal = image::CheckUncheckable(*config)) {
      if (observer_ != nullptr) observer_->OnPullRefused(refusal->metric);
      spdlog::debug("pull {} refused: {}", log::Quoted(requested), refusal->rule);
      return call->ReplyError(GrpcCode::kPermissionDenied, refusal->Message(requested));
    }
    return call->ReplyByRelaying();
  }
  if (auto refusal = Refused(*reference, *config)) {
    return call->ReplyError(GrpcCode::kPermissionDenied, refusal->Message(requested));
  }
  PullParams params{.requested = requested,
                    .path = call->path(),
                    .status_path = ImageServicePath(version, "ImageStatus"),
                    .headers = call->request_headers(),
                    .loop = &call->loop(),
                    .pool = &call->pool(),
                    .config = std::move(config)};
  bool started = false;
  auto attempt = JoinOrStart(*reference, std::move(request), std::move(params), &started);
  attempt->callers.push_back(call);
  call->OnCancelled([this, attempt, raw = call.get()] { OnPullCallerGone(attempt, raw); });
  if (started) TryNextCandidate(attempt);
}

std::optional<image::Refusal> ImageService::Refused(const image::Reference& reference,
                                                    const config::Config& config) {
  auto refusal = image::CheckPolicy(reference, config);
  if (!refusal) return std::nullopt;
  if (observer_ != nullptr) observer_->OnPullRefused(refusal->metric);
  // kubelet retries a refused pull with backoff, for every pod that wants it: one line per image
  // and minute says it without flooding the journal.
  auto now = std::chrono::steady_clock::now();
  std::string image = reference.String();
  auto [it, inserted] = refusals_logged_.try_emplace(image, now);
  if (inserted || now - it->second >= kRefusalLogInterval) {
    it->second = now;
    spdlog::warn("pull {} refused by the node's pull policy: {} (logged once a minute per image)",
                 image, refusal->rule);
  }
  if (refusals_logged_.size() > kRefusalLogMemory) {
    std::erase_if(refusals_logged_,
                  [&](const auto& entry) { return now - entry.second >= kRefusalLogInterval; });
    // More distinct images refused within a minute than remembered: forget them all rather than
    // grow (and scan at every refusal); at worst an image is logged again within its minute.
    if (refusals_logged_.size() > kRefusalLogMemory) refusals_logged_.clear();
  }
  return refusal;
}

std::shared_ptr<ImageService::PullAttempt> ImageService::JoinOrStart(
    const image::Reference& reference, pb::PullImageRequest request, PullParams params,
    bool* started) {
  const std::string pod_namespace = request.sandbox_config().metadata().namespace_();
  std::vector<image::Candidate> candidates =
      image::Rewrite(reference, *params.config, image::PullScope::ForPod(pod_namespace));
  // Same image, same candidates (the pod's namespace matters only through them: pods of every
  // namespace share a pull where no registry has `namespaces`) and same caller credentials: the
  // same pull. Credentials stay in memory only.
  std::string key = reference.String() + '\n';
  for (const image::Candidate& candidate : candidates) {
    key += std::to_string(candidate.registry_index) + ',';
  }
  key += '\n' + request.auth().SerializeAsString();
  auto [it, inserted] = pulls_.try_emplace(key);
  *started = inserted;
  if (!inserted) {
    spdlog::debug("pull {} joins the one under way", params.requested);
    return it->second;
  }
  auto attempt = std::make_shared<PullAttempt>();
  it->second = attempt;
  attempt->key = key;
  attempt->requested = std::move(params.requested);
  attempt->reference = reference.String();
  attempt->record_name = RecordNameOf(reference);
  attempt->path = std::move(params.path);
  attempt->status_path = std::move(params.status_path);
  attempt->headers = std::move(params.headers);
  attempt->loop = params.loop;
  attempt->pool = params.pool;
  attempt->request = std::move(request);
  attempt->config = std::move(params.config);
  const config::Config& config = *attempt->config;
  attempt->candidates = std::move(candidates);
  if (health_ != nullptr) {
    // Registries known to be down go last: still tried if nothing else works.
    std::stable_partition(
        attempt->candidates.begin(), attempt->candidates.end(), [&](const image::Candidate& c) {
          return c.is_origin() || !health_->IsDown(config.registries[c.registry_index].address);
        });
  }
  std::weak_ptr<PullAttempt> weak = attempt;
  attempt->timer = attempt->loop->AddTimer(config.timeout, [this, weak, timeout = config.timeout] {
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
  return attempt;
}

void ImageService::OnPullCallerGone(const std::shared_ptr<PullAttempt>& attempt,
                                    const InterceptedCall* call) {
  auto& callers = attempt->callers;
  callers.erase(std::remove_if(callers.begin(), callers.end(),
                               [&](const auto& c) { return c.get() == call; }),
                callers.end());
  if (!callers.empty() || !attempt->waiters.empty() || attempt->done) return;
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
  auto wall_started = std::chrono::system_clock::now();  // compared with the runtime's records
  attempt->current = relay::UnaryCall::Start(
      *attempt->loop, *attempt->pool, headers, relay::FrameMessage(request.SerializeAsString()),
      [this, attempt, &candidate, registry_address, started, wall_started](UnaryResult answer) {
        attempt->current = nullptr;
        if (attempt->done) return;
        auto took = std::chrono::steady_clock::now() - started;
        const std::string& label = registry_address.empty() ? kOriginLabel : registry_address;
        if (answer.ok()) {
          if (observer_ != nullptr) observer_->OnPullResult(label, "ok");
          if (health_ != nullptr && !registry_address.empty()) health_->MarkUp(registry_address);
          return Pulled(attempt, candidate, std::move(answer), took, wall_started);
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
        attempt->last_failure = PullFailureLabel(failure);
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

void ImageService::Pulled(const std::shared_ptr<PullAttempt>& attempt,
                          const image::Candidate& candidate, UnaryResult answer,
                          std::chrono::steady_clock::duration took,
                          std::chrono::system_clock::time_point wall_started) {
  std::string line = fmt::format("pull {} -> {} via {}: ok {}", attempt->requested, candidate.image,
                                 candidate.registry, Seconds(took));
  if (ServedForNamespacesOnly(*attempt, candidate)) {
    // A tenant's registry served it with the tenant's credentials: it stays under that
    // registry's name and is not remembered under kubelet's, so no other namespace's pod finds
    // it by name; the next pod that wants it pulls, and its namespace decides.
    KeepRegistryNames(candidate.image);
    spdlog::info("{}; held under the registry's name only (a registry with `namespaces`)", line);
    return FinishPull(attempt, &answer, GrpcCode::kOk, "");
  }
  std::optional<RenameJob> job = RenameFor(*attempt, candidate, answer, wall_started);
  if (!job) {
    KeepRegistryNames(candidate.image);
    locations_.Remember(attempt->reference, candidate.image);
    spdlog::info("{}", line);
    return FinishPull(attempt, &answer, GrpcCode::kOk, "");
  }
  // The answer waits until the image is held under the requested name: kubelet's next status
  // call must find it there. A concurrent identical pull keeps joining this attempt meanwhile.
  WithRecordsSupport(
      *attempt->loop, *attempt->pool,
      [this, attempt, job = std::move(*job), line, answer = std::move(answer),
       pulled_as = candidate.image](bool served) mutable {
        if (!served) {
          KeepRegistryNames(pulled_as);
          locations_.Remember(attempt->reference, pulled_as);
          spdlog::info("{}", line);
          return FinishPull(attempt, &answer, GrpcCode::kOk, "");
        }
        HoldUnderRequestedName(
            *attempt->loop, *attempt->pool, std::move(job),
            [this, attempt, line, answer = std::move(answer), pulled_as](RenameOutcome outcome) {
              if (outcome.ok) {
                locations_.Forget(attempt->reference);  // no longer elsewhere
                spdlog::info("{}, held as {}{}", line, fmt::join(outcome.held_as, " and "),
                             outcome.kept.empty()
                                 ? std::string()
                                 : fmt::format("; kept {}", fmt::join(outcome.kept, ", ")));
              } else {
                // The image is there under the registry's name: translation finds it.
                KeepRegistryNames(pulled_as);
                locations_.Remember(attempt->reference, pulled_as);
                spdlog::info("{}", line);
                spdlog::warn("pull {}: the image stays under {}: {}", attempt->requested, pulled_as,
                             outcome.error);
              }
              FinishPull(attempt, &answer, GrpcCode::kOk, "");
            });
      });
}

bool ImageService::ServedForNamespacesOnly(const PullAttempt& attempt,
                                           const image::Candidate& candidate) {
  return !candidate.is_origin() &&
         !attempt.config->registries.at(candidate.registry_index).namespaces.empty();
}

void ImageService::KeepRegistryNames(const std::string& pulled_as) {
  if (auto pulled = image::ParseReference(pulled_as); pulled.ok()) {
    left_records_.Take(pulled->Name());
  }
}

std::optional<RenameJob> ImageService::RenameFor(const PullAttempt& attempt,
                                                 const image::Candidate& candidate,
                                                 const UnaryResult& answer,
                                                 std::chrono::system_clock::time_point started) {
  if (attempt.config->image_names != config::ImageNames::kRequested || candidate.is_origin()) {
    return std::nullopt;
  }
  auto requested = image::ParseReference(attempt.reference);
  auto pulled = image::ParseReference(candidate.image);
  if (!requested.ok() || !pulled.ok() || RecordNameOf(*pulled) == RecordNameOf(*requested)) {
    return std::nullopt;  // pulled under its own name already
  }
  pb::PullImageResponse response;
  auto message = answer.Message();
  if (!message || !response.ParseFromArray(message->data(), static_cast<int>(message->size())) ||
      !image::LooksLikeImageId(response.image_ref())) {
    spdlog::warn("pull {}: the runtime's answer names no image id; the image stays under {}",
                 attempt.requested, candidate.image);
    return std::nullopt;
  }
  RenameJob job;
  job.requested = std::move(*requested);
  job.pulled = std::move(*pulled);
  job.registry = candidate.registry;
  job.image_id = response.image_ref();
  job.pull_started = started;
  job.status_path = attempt.status_path;
  job.wanted_elsewhere = [this, self = &attempt](const std::string& name) {
    auto record = image::ParseReference(name);
    WantedBy wanted = WantedBy::kNobody;
    for (const auto& [key, other] : pulls_) {
      if (other.get() == self) continue;
      if (other->record_name == name) return WantedBy::kAskedFor;
      // A pull the runtime is still making of the same repository creates records under these
      // names and reads them back before it answers: one deleted in between fails that pull
      // with NOT_FOUND (seen with concurrent pulls of one image under other credentials). The
      // deletion is handed over to the pulls that finish later (LeftRecords).
      if (other->current == nullptr || other->next == 0 || !record.ok()) continue;
      auto pulling = image::ParseReference(other->candidates[other->next - 1].image);
      if (pulling.ok() && pulling->Name() == record->Name()) wanted = WantedBy::kBeingPulled;
    }
    return wanted;
  };
  job.left = &left_records_;
  return job;
}

void ImageService::WithRecordsSupport(relay::EventLoop& loop, relay::UpstreamPool& pool,
                                      std::function<void(bool served)> then) {
  if (records_support_ != RecordsSupport::kUnknown) {
    return then(records_support_ == RecordsSupport::kServed);
  }
  // A name no image can have: the answer tells whether the service is there, nothing else.
  ImageRecords(loop, pool)
      .Get("image-cri-shim.invalid/probe:none",
           [this, then = std::move(then)](const UnaryResult& result, const ImageRecord*) {
             std::string answer =
                 fmt::format("{}: {}", relay::GrpcCodeName(result.code), Shorten(result.message));
             ImageApi api = ImageApiFrom(result);
             if (records_support_ != RecordsSupport::kUnknown) {
               // Settled meanwhile by another probe.
             } else if (api != ImageApi::kUnknown) {
               records_support_ =
                   api == ImageApi::kServed ? RecordsSupport::kServed : RecordsSupport::kNotServed;
               records_probe_ = answer;
               LogImageNames(/*changed=*/false);
             } else if (result.answered) {
               // Only UNIMPLEMENTED says the service is not there: an error of the moment must
               // not keep registry names for the rest of the shim's life.
               spdlog::warn(
                   "image names: cannot tell whether the runtime serves containerd's image API "
                   "({}); this pull's image stays under the registry's name, the next pull asks "
                   "again",
                   answer);
             } else {
               spdlog::debug("image names: the runtime did not answer the probe ({})", answer);
             }
             then(records_support_ == RecordsSupport::kServed);
           });
}

void ImageService::EnsurePresent(relay::EventLoop& loop, relay::UpstreamPool& pool,
                                 const std::string& image, OwnPullDone done) {
  config::ConfigPtr config = config_();
  auto reference = image::ParseReference(image);
  if (!reference.ok() || image::LooksLikeImageId(image)) {
    return loop.Defer([done, image] {
      done({OwnPullResult::State::kFailed, "invalid_reference",
            "\"" + image + "\" is not an image reference"});
    });
  }
  if (auto refusal = Refused(*reference, *config)) {
    return loop.Defer([done, message = refusal->Message(image)] {
      done({OwnPullResult::State::kFailed, "refused", message});
    });
  }
  auto names = LookupNames(image, *config);
  std::string status_path = ImageServicePath("v1", "ImageStatus");
  Resolve(
      OwnCaller(loop, pool), status_path, *config, image, std::move(names), PlainStatusRequest(),
      [this, &loop, &pool, image, status_path, config, done = std::move(done)](
          std::optional<std::string> stored, UnaryResult answer) mutable {
        if (stored) return done({OwnPullResult::State::kPresent, "", ""});
        if (!answer.ok()) {
          return done({OwnPullResult::State::kFailed,
                       answer.answered ? "failed" : "runtime_unreachable",
                       "cannot ask the runtime whether it holds the image: " +
                           std::string(relay::GrpcCodeName(answer.code)) + ": " + answer.message});
        }
        // A pull without a pod: only registries without `namespaces` serve it.
        pb::PullImageRequest request;
        request.mutable_image()->set_image(image);
        std::string path = ImageServicePath("v1", "PullImage");
        PullParams params{.requested = image,
                          .path = path,
                          .status_path = status_path,
                          .headers = relay::UnaryCall::OwnHeaders(path),
                          .loop = &loop,
                          .pool = &pool,
                          .config = std::move(config)};
        auto reference = image::ParseReference(image);
        bool started = false;
        auto attempt = JoinOrStart(*reference, std::move(request), std::move(params), &started);
        attempt->waiters.push_back(std::move(done));
        if (started) TryNextCandidate(attempt);
      });
}

void ImageService::DetectRuntime(relay::EventLoop& loop, relay::UpstreamPool& pool) {
  WithRecordsSupport(loop, pool, [](bool) {});
}

void ImageService::OnConfigChanged(relay::EventLoop& loop, relay::UpstreamPool& pool) {
  config::ImageNames now = config_()->image_names;
  if (now == image_names_seen_) return;
  image_names_seen_ = now;
  if (records_support_ == RecordsSupport::kUnknown) {
    // Said once the runtime's answer is known (with the value then in force).
    return WithRecordsSupport(loop, pool, [](bool) {});
  }
  LogImageNames(/*changed=*/true);
}

void ImageService::LogImageNames(bool changed) {
  config::ConfigPtr config = config_();
  image_names_seen_ = config->image_names;
  bool requested = config->image_names == config::ImageNames::kRequested;
  // After a reload the new value applies to pulls from then on; images already pulled keep the
  // names they have.
  std::string when = changed ? "; changed by a reload: from the next pull on, images pulled "
                               "before keep their names"
                             : "";
  if (records_support_ == RecordsSupport::kServed) {
    if (requested) {
      spdlog::info(
          "image names: pulled images are held under the names kubelet asks for "
          "(imageNames: requested; the runtime serves containerd's image API){}",
          when);
    } else {
      spdlog::info(
          "image names: pulled images stay under the registries' names and kubelet's names "
          "are translated (imageNames: registry){}",
          when);
    }
    return;
  }
  auto level = requested ? spdlog::level::warn : spdlog::level::info;
  spdlog::log(level,
              "image names: the runtime does not serve containerd's image API ({}); pulled "
              "images stay under the registries' names and kubelet's names are translated "
              "(imageNames: {}){}",
              records_probe_, config::ImageNamesName(config->image_names), when);
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
  if (attempt->waiters.empty()) return;
  OwnPullResult result;
  if (answer != nullptr && answer->ok()) {
    result.state = OwnPullResult::State::kPulled;
  } else {
    result.state = OwnPullResult::State::kFailed;
    result.message = answer != nullptr ? answer->message : message;
    if (answer != nullptr) {
      result.reason = answer->answered ? attempt->last_failure : "runtime_unreachable";
    } else if (code == GrpcCode::kDeadlineExceeded) {
      result.reason = "timeout";
    } else if (code == GrpcCode::kCancelled) {
      result.reason = "cancelled";
    } else {
      result.reason = attempt->all_absent ? "image_absent" : attempt->last_failure;
    }
  }
  auto waiters = std::move(attempt->waiters);
  for (auto& waiter : waiters) waiter(result);
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
  // imageNames: requested holds images under kubelet's name, so that comes first, as the
  // runtime alone would answer: a name remembered from before must not shadow it, and the usual
  // lookup costs one call whatever is remembered. Then where the image was last found under a
  // registry's name (first with imageNames: registry), then the registries' names: they serve
  // images pulled under them (imageNames: registry, a runtime without containerd's image API, a
  // failed rename, or a pull from before).
  if (config.image_names == config::ImageNames::kRequested) add(image);
  if (auto stored = locations_.Find(reference->String())) add(*stored);
  for (const auto& candidate : image::Rewrite(*reference, config, image::PullScope::Lookup())) {
    add(candidate.image);
  }
  add(image);  // the name as given, last otherwise
  return names;
}

ImageService::RuntimeCaller ImageService::CallerOf(std::shared_ptr<InterceptedCall> call) {
  return {.call =
              [call](const std::string& path, std::string message, relay::UnaryCall::Done done) {
                call->CallRuntime(path, std::move(message), std::move(done));
              },
          .gone = [call] { return call->finished(); }};
}

ImageService::RuntimeCaller ImageService::OwnCaller(relay::EventLoop& loop,
                                                    relay::UpstreamPool& pool) {
  return {.call =
              [&loop, &pool](const std::string& path, std::string message,
                             relay::UnaryCall::Done done) {
                relay::UnaryCall::Start(loop, pool, relay::UnaryCall::OwnHeaders(path),
                                        relay::FrameMessage(message), std::move(done));
              },
          .gone = [] { return false; }};
}

void ImageService::Resolve(std::shared_ptr<InterceptedCall> call, std::string status_path,
                           const config::Config& config, const std::string& given,
                           std::vector<std::string> names,
                           std::function<std::string(const std::string&)> make_request,
                           Resolved done) {
  Resolve(CallerOf(std::move(call)), std::move(status_path), config, given, std::move(names),
          std::move(make_request), std::move(done));
}

void ImageService::Resolve(RuntimeCaller runtime, std::string status_path,
                           const config::Config& config, const std::string& given,
                           std::vector<std::string> names,
                           std::function<std::string(const std::string&)> make_request,
                           Resolved done) {
  auto resolution = std::make_shared<Resolution>();
  resolution->runtime = std::move(runtime);
  resolution->status_path = std::move(status_path);
  resolution->given = given;
  resolution->given_early = config.image_names == config::ImageNames::kRequested;
  resolution->names = std::move(names);
  resolution->make_request = std::move(make_request);
  resolution->done = std::move(done);
  // An id is not remembered (it resolves to itself).
  if (auto reference = image::ParseReference(given);
      reference.ok() && !image::LooksLikeImageId(given)) {
    resolution->key = reference->String();
  }
  ResolveStep(std::move(resolution));
}

void ImageService::ResolveStep(std::shared_ptr<Resolution> resolution) {
  const std::string& name = resolution->names[resolution->next++];
  resolution->runtime.call(resolution->status_path, resolution->make_request(name),
                           [this, resolution, &name](UnaryResult answer) {
                             if (resolution->runtime.gone()) return;
                             if (HasImage(answer)) {
                               // Next time the first call hits, whoever pulled the image (the shim
                               // or not); under its own name it needs no memory.
                               if (!resolution->key.empty()) {
                                 if (name == resolution->given && resolution->given_early) {
                                   locations_.Forget(resolution->key);
                                 } else {
                                   locations_.Remember(resolution->key, name);
                                 }
                               }
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
// The runtime's answer to ImageStatus or ListImages (`Response`), with `pinned` set on images
// held under a pinned name; the answer as it came when nothing changes.
template <typename Response>
void ReplyPinned(InterceptedCall& call, const UnaryResult& answer,
                 const std::vector<std::string>& pin) {
  auto message = answer.Message();
  Response response;
  if (pin.empty() || !answer.ok() || !message ||
      !response.ParseFromArray(message->data(), static_cast<int>(message->size()))) {
    return call.Reply(answer);
  }
  bool changed = false;
  if constexpr (std::is_same_v<Response, pb::ListImagesResponse>) {
    for (auto& image : *response.mutable_images()) changed = MarkPinned(image, pin) || changed;
  } else {
    changed = response.has_image() && MarkPinned(*response.mutable_image(), pin);
  }
  if (!changed) return call.Reply(answer);
  call.ReplyMessage(response.SerializeAsString());
}
}  // namespace

void ImageService::Status(std::shared_ptr<InterceptedCall> call, std::string_view version,
                          std::string_view message, config::ConfigPtr config) {
  pb::ImageStatusRequest request;
  if (!request.ParseFromArray(message.data(), static_cast<int>(message.size()))) {
    return call->ReplyByRelaying();
  }
  const std::string& given = request.image().image();
  if (given.empty() || image::LooksLikeImageId(given)) {  // the runtime's answer, pins marked
    if (config->pin.empty()) return call->ReplyByRelaying();
    return call->CallRuntime(call->path(), std::string(message),
                             [call, config](UnaryResult answer) {
                               ReplyPinned<pb::ImageStatusResponse>(*call, answer, config->pin);
                             });
  }
  // A status call names no pod, and what a tenant's registry holds is for that tenant's pods
  // only: "absent" makes kubelet pull, and the pull, which names the pod, decides. (The name is
  // parsed for it only when some registry has `namespaces`: this call precedes every container
  // start.)
  if (config->AnyRegistryHasNamespaces()) {
    if (auto reference = image::ParseReference(given);
        reference.ok() && image::OnNamespaceScopedRegistry(*reference, *config)) {
      spdlog::debug("status {}: on a registry with namespaces, absent until a pod's pull", given);
      return call->ReplyMessage(pb::ImageStatusResponse().SerializeAsString());
    }
  }
  auto start = std::chrono::steady_clock::now();
  if (config->image_names == config::ImageNames::kRequested) {
    // kubelet asks before every container start: held under kubelet's name, the runtime answers
    // the request as it came, and only "absent" needs the lookup of the registries' names.
    return call->CallRuntime(
        call->path(), std::string(message),
        [this, call, version = std::string(version), request = std::move(request), config,
         start](UnaryResult answer) {
          if (call->finished()) return;
          bool present = HasImage(answer);
          if (present || !answer.ok()) {
            return StatusAnswered(*call, request.image().image(), config->pin, start,
                                  present ? std::optional(request.image().image()) : std::nullopt,
                                  answer);
          }
          StatusLookup(call, version, request, config, start, /*given_asked=*/true);
        });
  }
  StatusLookup(call, version, request, config, start, /*given_asked=*/false);
}

void ImageService::StatusLookup(std::shared_ptr<InterceptedCall> call, std::string_view version,
                                const pb::ImageStatusRequest& request, config::ConfigPtr config,
                                std::chrono::steady_clock::time_point start, bool given_asked) {
  std::string requested = request.image().image();
  auto names = LookupNames(requested, *config);
  if (given_asked) std::erase(names, requested);
  if (names.empty()) return call->ReplyByRelaying();  // unparsable: the runtime's own answer
  Resolve(
      call, ImageServicePath(version, "ImageStatus"), *config, requested, std::move(names),
      [request](const std::string& name) {
        pb::ImageStatusRequest lookup = request;  // kubelet's own request, verbose and all
        lookup.mutable_image()->set_image(name);
        return lookup.SerializeAsString();
      },
      [call, requested, config, start](std::optional<std::string> stored, UnaryResult answer) {
        StatusAnswered(*call, requested, config->pin, start, stored, answer);
      });
}

void ImageService::StatusAnswered(InterceptedCall& call, const std::string& requested,
                                  const std::vector<std::string>& pin,
                                  std::chrono::steady_clock::time_point start,
                                  const std::optional<std::string>& stored,
                                  const UnaryResult& answer) {
  auto took = std::chrono::steady_clock::now() - start;
  // Kubelet asks for the status of an image before every container start: an answer is
  // routine (debug); only a failed lookup is worth a line at the default level. (Debug is
  // checked first: the duration would be formatted even for a line that is not written.)
  if (!answer.ok()) {
    spdlog::info("status {}: {} {} error={}", requested, relay::GrpcCodeName(answer.code),
                 Millis(took), log::Quoted(Shorten(answer.message)));
  } else if (log::DebugEnabled()) {
    if (stored) {
      spdlog::debug("status {} -> {}: present {}", requested, *stored, Millis(took));
    } else {
      spdlog::debug("status {}: absent {}", requested, Millis(took));
    }
  }
  ReplyPinned<pb::ImageStatusResponse>(call, answer, pin);
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
  Resolve(call, ImageServicePath(version, "ImageStatus"), *config, requested, std::move(names),
          PlainStatusRequest(),
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
  if (filter.empty()) {  // the whole list is the runtime's, with pins marked
    if (config->pin.empty()) return call->ReplyByRelaying();
    return call->CallRuntime(call->path(), std::string(message),
                             [call, config](UnaryResult answer) {
                               ReplyPinned<pb::ListImagesResponse>(*call, answer, config->pin);
                             });
  }
  // containerd 1.6 ignores the filter and lists everything, so the shim answers a filtered
  // list itself: the one image the name resolves to, or none.
  auto names = image::LooksLikeImageId(filter) ? std::vector<std::string>{filter}
                                               : LookupNames(filter, *config);
  if (names.empty()) return call->ReplyByRelaying();
  Resolve(call, ImageServicePath(version, "ImageStatus"), *config, filter, std::move(names),
          PlainStatusRequest(),
          [call, config](std::optional<std::string> stored, UnaryResult answer) {
            if (!answer.ok()) return call->Reply(answer);
            pb::ListImagesResponse list;
            if (stored) {
              pb::ImageStatusResponse status;
              auto message = answer.Message();
              if (message &&
                  status.ParseFromArray(message->data(), static_cast<int>(message->size()))) {
                *list.add_images() = status.image();  // unknown fields travel with it
                MarkPinned(*list.mutable_images(0), config->pin);
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
  Resolve(call, ImageServicePath(version, "ImageStatus"), *config,
          request->config().image().image(), std::move(names), PlainStatusRequest(),
          [call, request, path](std::optional<std::string> stored, UnaryResult answer) {
            if (!stored) {
              if (!answer.ok()) return call->Reply(answer);
              return call->ReplyByRelaying();
            }
            spdlog::debug("create container image {} -> {}", request->config().image().image(),
                          *stored);
            request->mutable_config()->mutable_image()->set_image(*stored);
            call->CallRuntime(path, request->SerializeAsString(),
                              [call](UnaryResult result) { call->Reply(result); });
          });
}

}  // namespace shim::cri
