// The shim's own handling of the image calls (both CRI versions):
//   PullImage       the image goes to the configured registries in order, each with its own
//                   credentials, until one serves it; bounded by `timeout`.
//   ImageStatus,    the name kubelet uses resolves to the name the image was stored under
//   RemoveImage,    (imageNames: requested, the name as given first; then the remembered one,
//   ListImages,     then each candidate, then the name as given), so kubelet sees the image it
//   CreateContainer asked for and does not pull it again.
// Everything else about these calls is the runtime's own answer, passed back as it came.
//
// Loop thread only, except the ConfigSource, which must be thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "cri/image_locations.h"
#include "cri/pull_observer.h"
#include "cri/requested_name.h"
#include "cri_image.pb.h"
#include "image/policy.h"
#include "image/rewriter.h"
#include "registry/health.h"
#include "relay/intercepted_call.h"

namespace shim::cri {

// The outcome of a pull the shim makes on its own (prePull).
struct OwnPullResult {
  enum class State { kPresent, kPulled, kFailed };
  State state = State::kFailed;
  // kFailed: refused, image_absent, registry_down, credentials_rejected, invalid_reference,
  // timeout, runtime_unreachable, cancelled or failed.
  std::string reason;
  std::string message;  // kFailed: what happened, for the log (never a credential)
};
using OwnPullDone = std::function<void(const OwnPullResult&)>;

class ImageService final : public relay::Interceptor {
 public:
  using ConfigSource = std::function<config::ConfigPtr()>;

  // `health` may be null (no failover ordering, no down marks); it must outlive the service.
  ImageService(ConfigSource config, registry::RegistryHealth* health,
               PullObserver* observer = nullptr);
  ~ImageService() override;

  bool Intercepts(std::string_view path) const override;
  void Handle(std::shared_ptr<relay::InterceptedCall> call) override;

  // Finds out whether the runtime serves containerd's image API (and so whether images can be
  // held under kubelet's names) and logs which behaviour applies. Until it answers, the first
  // pull that needs it asks again.
  void DetectRuntime(relay::EventLoop& loop, relay::UpstreamPool& pool);
  // After a reload: when it changed `imageNames`, logs which behaviour applies from now on
  // (finding out first whether the runtime serves containerd's image API, if still unknown).
  void OnConfigChanged(relay::EventLoop& loop, relay::UpstreamPool& pool);

  // Makes sure the runtime holds `image` (a normalised reference): present already (by its name
  // or a registry's), or pulled through the normal path (policy, candidates of a pull without a
  // pod, credentials, failover, naming), joining an identical pull under way. `done` runs once,
  // later, on the loop thread.
  void EnsurePresent(relay::EventLoop& loop, relay::UpstreamPool& pool, const std::string& image,
                     OwnPullDone done);

  const ImageLocations& locations() const { return locations_; }
  size_t pulls_in_flight() const { return pulls_.size(); }

 private:
  struct PullAttempt;
  struct Resolution;
  // Who makes the runtime calls of a lookup: a kubelet call (its metadata and deadline; nothing
  // more once it is gone), or the shim itself.
  struct RuntimeCaller {
    std::function<void(const std::string& path, std::string message, relay::UnaryCall::Done)> call;
    std::function<bool()> gone;
  };
  // Where a new pull attempt's runtime calls go, and as whom.
  struct PullParams {
    std::string requested;    // as the first caller sent it
    std::string path;         // PullImage in the caller's API version
    std::string status_path;  // ImageStatus in the same version
    relay::Headers headers;   // the first caller's (metadata), or the shim's own
    relay::EventLoop* loop = nullptr;
    relay::UpstreamPool* pool = nullptr;
    config::ConfigPtr config;
  };
  using Resolved =
      std::function<void(std::optional<std::string> stored_name, relay::UnaryResult status_answer)>;

  void Pull(std::shared_ptr<relay::InterceptedCall> call, std::string_view version,
            std::string_view message, config::ConfigPtr config);
  // The policy's refusal of `reference`, counted and logged (once a minute per image).
  std::optional<image::Refusal> Refused(const image::Reference& reference,
                                        const config::Config& config);
  // The attempt under way for the same image, candidates and credentials, or a new one
  // (`*started`: the caller must then TryNextCandidate it).
  std::shared_ptr<PullAttempt> JoinOrStart(const image::Reference& reference,
                                           imagecrishim::cri::PullImageRequest request,
                                           PullParams params, bool* started);
  void TryNextCandidate(std::shared_ptr<PullAttempt> attempt);
  // A candidate served the image: holds it under the requested name when that applies, then
  // answers every caller.
  void Pulled(const std::shared_ptr<PullAttempt>& attempt, const image::Candidate& candidate,
              relay::UnaryResult answer, std::chrono::steady_clock::duration took,
              std::chrono::system_clock::time_point wall_started);
  // The candidate is a registry with `namespaces`: what it served is its tenant's alone.
  static bool ServedForNamespacesOnly(const PullAttempt& attempt,
                                      const image::Candidate& candidate);
  // What re-points the pulled records to the requested name; nullopt when nothing is to do.
  std::optional<RenameJob> RenameFor(const PullAttempt& attempt, const image::Candidate& candidate,
                                     const relay::UnaryResult& answer,
                                     std::chrono::system_clock::time_point started);
  // The image stays under the registry's name `pulled_as`: records of its repository left for
  // pulls in flight to delete are wanted now, and stay.
  void KeepRegistryNames(const std::string& pulled_as);
  // Runs `then(served)` once it is known whether the runtime serves containerd's image API.
  void WithRecordsSupport(relay::EventLoop& loop, relay::UpstreamPool& pool,
                          std::function<void(bool served)> then);
  // `changed`: a reload switched `imageNames` to the value now in force.
  void LogImageNames(bool changed);
  // Answers every caller waiting on the attempt and forgets it.
  void FinishPull(const std::shared_ptr<PullAttempt>& attempt, const relay::UnaryResult* answer,
                  relay::GrpcCode code, const std::string& message);
  void OnPullCallerGone(const std::shared_ptr<PullAttempt>& attempt,
                        const relay::InterceptedCall* call);

  void Status(std::shared_ptr<relay::InterceptedCall> call, std::string_view version,
              std::string_view message, config::ConfigPtr config);
  // The lookup of an image's registry names for a status call (`given_asked`: the name as
  // given was asked already), and the reply.
  void StatusLookup(std::shared_ptr<relay::InterceptedCall> call, std::string_view version,
                    const imagecrishim::cri::ImageStatusRequest& request, config::ConfigPtr config,
                    std::chrono::steady_clock::time_point start, bool given_asked);
  static void StatusAnswered(relay::InterceptedCall& call, const std::string& requested,
                             const std::vector<std::string>& pin,
                             std::chrono::steady_clock::time_point start,
                             const std::optional<std::string>& stored,
                             const relay::UnaryResult& answer);
  void Remove(std::shared_ptr<relay::InterceptedCall> call, std::string_view version,
              std::string_view message, config::ConfigPtr config);
  void List(std::shared_ptr<relay::InterceptedCall> call, std::string_view version,
            std::string_view message, config::ConfigPtr config);
  void CreateContainer(std::shared_ptr<relay::InterceptedCall> call, std::string_view version,
                       std::string_view message, config::ConfigPtr config);

  // The names `image` may be stored under, most likely first; empty for image ids and
  // unparsable names (which go to the runtime as they are).
  std::vector<std::string> LookupNames(const std::string& image, const config::Config& config);
  // Asks the runtime for each name in turn (`given`: the name the caller used) (ImageStatus
  // requests made by `make_request`) until one is present. `done` gets the name found, or nullopt
  // with the last answer.
  void Resolve(std::shared_ptr<relay::InterceptedCall> call, std::string status_path,
               const config::Config& config, const std::string& given,
               std::vector<std::string> names,
               std::function<std::string(const std::string&)> make_request, Resolved done);
  void Resolve(RuntimeCaller runtime, std::string status_path, const config::Config& config,
               const std::string& given, std::vector<std::string> names,
               std::function<std::string(const std::string&)> make_request, Resolved done);
  static RuntimeCaller CallerOf(std::shared_ptr<relay::InterceptedCall> call);
  static RuntimeCaller OwnCaller(relay::EventLoop& loop, relay::UpstreamPool& pool);
  void ResolveStep(std::shared_ptr<Resolution> resolution);

  ConfigSource config_;
  registry::RegistryHealth* health_;
  PullObserver* observer_;
  ImageLocations locations_;
  enum class RecordsSupport { kUnknown, kServed, kNotServed };
  RecordsSupport records_support_ = RecordsSupport::kUnknown;
  std::string records_probe_;            // the answer that settled records_support_, for the log
  config::ImageNames image_names_seen_;  // `imageNames` as the last reload left it
  // Registry-named records left for pulls still in flight to delete (requested_name.h).
  LeftRecords left_records_;
  // Pulls under way, by image and caller credentials: a second identical pull joins the first.
  std::unordered_map<std::string, std::shared_ptr<PullAttempt>> pulls_;
  // When a refusal of each image was last logged.
  static constexpr std::chrono::seconds kRefusalLogInterval{60};
  static constexpr size_t kRefusalLogMemory = 1024;
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> refusals_logged_;
};

}  // namespace shim::cri
