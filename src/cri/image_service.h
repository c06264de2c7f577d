// The shim's own handling of the image calls (both CRI versions):
//   PullImage       the image goes to the configured registries in order, each with its own
//                   credentials, until one serves it; bounded by `timeout`.
//   ImageStatus,    the name kubelet uses resolves to the name the image was stored under
//   RemoveImage,    (the remembered one, then each candidate, then the name as given), so
//   ListImages,     kubelet sees the image it asked for and does not pull it again.
//   CreateContainer
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
#include "image/rewriter.h"
#include "registry/health.h"
#include "relay/intercepted_call.h"

namespace shim::cri {

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

  const ImageLocations& locations() const { return locations_; }
  size_t pulls_in_flight() const { return pulls_.size(); }

 private:
  struct PullAttempt;
  struct Resolution;
  using Resolved =
      std::function<void(std::optional<std::string> stored_name, relay::UnaryResult status_answer)>;

  void Pull(std::shared_ptr<relay::InterceptedCall> call, std::string_view version,
            std::string_view message, config::ConfigPtr config);
  void TryNextCandidate(std::shared_ptr<PullAttempt> attempt);
  // A candidate served the image: holds it under the requested name when that applies, then
  // answers every caller.
  void Pulled(const std::shared_ptr<PullAttempt>& attempt, const image::Candidate& candidate,
              relay::UnaryResult answer, std::chrono::steady_clock::duration took,
              std::chrono::system_clock::time_point wall_started);
  // What re-points the pulled records to the requested name; nullopt when nothing is to do.
  std::optional<RenameJob> RenameFor(const PullAttempt& attempt, const image::Candidate& candidate,
                                     const relay::UnaryResult& answer,
                                     std::chrono::system_clock::time_point started);
  // Runs `then(served)` once it is known whether the runtime serves containerd's image API.
  void WithRecordsSupport(relay::EventLoop& loop, relay::UpstreamPool& pool,
                          std::function<void(bool served)> then);
  void LogImageNames(const relay::UnaryResult& probe);
  // Answers every caller waiting on the attempt and forgets it.
  void FinishPull(const std::shared_ptr<PullAttempt>& attempt, const relay::UnaryResult* answer,
                  relay::GrpcCode code, const std::string& message);
  void OnPullCallerGone(const std::shared_ptr<PullAttempt>& attempt,
                        const relay::InterceptedCall* call);

  void Status(std::shared_ptr<relay::InterceptedCall> call, std::string_view version,
              std::string_view message, config::ConfigPtr config);
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
  void ResolveStep(std::shared_ptr<Resolution> resolution);

  ConfigSource config_;
  registry::RegistryHealth* health_;
  PullObserver* observer_;
  ImageLocations locations_;
  enum class RecordsSupport { kUnknown, kServed, kNotServed };
  RecordsSupport records_support_ = RecordsSupport::kUnknown;
  // Pulls under way, by image and caller credentials: a second identical pull joins the first.
  std::unordered_map<std::string, std::shared_ptr<PullAttempt>> pulls_;
};

}  // namespace shim::cri
