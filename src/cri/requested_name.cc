#include "cri/requested_name.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>

#include "cri/image_names.h"
#include "cri/image_records.h"
#include "cri_image.pb.h"

namespace shim::cri {

namespace pb = imagecrishim::cri;
using relay::UnaryResult;

namespace {

std::string Why(const UnaryResult& result) {
  return fmt::format("{}: {}", relay::GrpcCodeName(result.code), result.message);
}

std::chrono::system_clock::time_point TimeOf(const imagecrishim::containerd::Timestamp& t) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::seconds(t.seconds()) + std::chrono::nanoseconds(t.nanos())));
}

bool Contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

// How long to wait for the CRI plugin to show the new names, and how often to look. Its event
// handling takes well under a millisecond on an idle node; the bound is for a busy one.
constexpr std::chrono::milliseconds kFirstLook{1};
constexpr std::chrono::milliseconds kLongestPause{100};
constexpr std::chrono::milliseconds kVisibleWithin{3000};

class Renamer : public std::enable_shared_from_this<Renamer> {
 public:
  Renamer(relay::EventLoop& loop, relay::UpstreamPool& pool, RenameJob job,
          std::function<void(RenameOutcome)> done)
      : loop_(loop),
        pool_(pool),
        records_(loop, pool),
        job_(std::move(job)),
        done_(std::move(done)) {}

  void Start() {
    records_.Get(job_.image_id,
                 [self = shared_from_this()](const UnaryResult& result, const ImageRecord* record) {
                   if (record == nullptr) {
                     return self->Fail(fmt::format("cannot read the image record {}: {}",
                                                   self->job_.image_id, Why(result)));
                   }
                   self->source_ = *record;
                   self->Plan();
                   self->PutNext();
                 });
  }

 private:
  void Plan() {
    const std::string& digest = source_.target().digest();
    outcome_.held_as = RecordNamesFor(job_.requested, digest).All();
    for (const auto& name : RecordNamesFor(job_.pulled, digest).All()) {
      if (!Contains(outcome_.held_as, name)) registry_names_.push_back(name);
    }
  }

  // Step 2: the requested name's records, one after the other.
  void PutNext() {
    if (next_ == outcome_.held_as.size()) {
      next_ = 0;
      return RemoveNext();
    }
    ImageRecord record;
    record.set_name(outcome_.held_as[next_++]);
    *record.mutable_target() = source_.target();
    auto& labels = *record.mutable_labels();
    for (const auto& [key, value] : source_.labels()) labels[key] = value;
    labels[kRegistryLabel] = job_.registry;
    labels[kPulledAsLabel] = job_.pulled.String();
    // On an existing record (a re-pull, or a name kubelet pulled before): the new content and
    // these labels win, any other label of it stays, as on a direct re-pull.
    std::vector<std::string> paths = {"target"};
    for (const auto& [key, value] : labels) paths.push_back("labels." + key);
    records_.Put(record, std::move(paths),
                 [self = shared_from_this(), name = record.name()](const UnaryResult& result) {
                   if (!result.ok()) {
                     return self->Fail(
                         fmt::format("cannot create the image record {}: {}", name, Why(result)));
                   }
                   self->PutNext();
                 });
  }

  // Step 3: the registry-named records, each only if this pull created it.
  void RemoveNext() {
    if (next_ == registry_names_.size()) return WaitVisible();
    const std::string& name = registry_names_[next_++];
    if (job_.wanted_elsewhere && job_.wanted_elsewhere(name)) {
      outcome_.kept.push_back(name + " (another pull in flight asks for it)");
      return RemoveNext();
    }
    records_.Get(name, [self = shared_from_this(), name](const UnaryResult& result,
                                                         const ImageRecord* record) {
      if (record == nullptr) {
        if (!result.answered || result.code != static_cast<int>(relay::GrpcCode::kNotFound)) {
          self->outcome_.kept.push_back(name + " (cannot read it: " + Why(result) + ")");
        }
        return self->RemoveNext();
      }
      if (TimeOf(record->created_at()) < self->job_.pull_started) {
        self->outcome_.kept.push_back(name + " (it was there before this pull)");
        return self->RemoveNext();
      }
      if (record->target().digest() != self->source_.target().digest()) {
        self->outcome_.kept.push_back(name + " (it now names other content)");
        return self->RemoveNext();
      }
      self->records_.Delete(name, [self, name](const UnaryResult& result) {
        if (result.ok()) {
          self->removed_.push_back(name);
        } else {
          self->outcome_.kept.push_back(name + " (cannot delete it: " + Why(result) + ")");
        }
        self->RemoveNext();
      });
    });
  }

  // Step 4: the CRI plugin's view, which follows the records through events.
  void WaitVisible() {
    waited_from_ = std::chrono::steady_clock::now();
    Look(kFirstLook);
  }

  void Look(std::chrono::milliseconds pause) {
    pb::ImageStatusRequest request;
    request.mutable_image()->set_image(outcome_.held_as.front());
    relay::UnaryCall::Start(
        loop_, pool_, relay::UnaryCall::OwnHeaders(job_.status_path),
        relay::FrameMessage(request.SerializeAsString()),
        [self = shared_from_this(), pause](UnaryResult result) {
          if (self->Visible(result)) return self->Succeed();
          if (std::chrono::steady_clock::now() - self->waited_from_ >= kVisibleWithin) {
            spdlog::warn(
                "image {}: the runtime's CRI view does not show its new names after {}ms; it "
                "will ({}{})",
                self->job_.image_id, kVisibleWithin.count(),
                fmt::join(self->outcome_.held_as, ", "),
                result.ok() ? "" : "; last status: " + Why(result));
            return self->Succeed();
          }
          self->loop_.AddTimer(pause,
                               [self, pause] { self->Look(std::min(pause * 2, kLongestPause)); });
        });
  }

  bool Visible(const UnaryResult& result) const {
    auto message = result.Message();
    pb::ImageStatusResponse status;
    if (!result.ok() || !message ||
        !status.ParseFromArray(message->data(), static_cast<int>(message->size())) ||
        !status.has_image() || status.image().id() != job_.image_id) {
      return false;
    }
    std::vector<std::string> names(status.image().repo_tags().begin(),
                                   status.image().repo_tags().end());
    names.insert(names.end(), status.image().repo_digests().begin(),
                 status.image().repo_digests().end());
    for (const auto& name : outcome_.held_as) {
      if (!Contains(names, name)) return false;
    }
    for (const auto& name : removed_) {
      if (Contains(names, name)) return false;
    }
    return true;
  }

  void Succeed() {
    outcome_.ok = true;
    Finish();
  }

  void Fail(std::string error) {
    outcome_.ok = false;
    outcome_.error = std::move(error);
    Finish();
  }

  void Finish() {
    auto done = std::move(done_);
    done_ = nullptr;
    if (done) done(std::move(outcome_));
  }

  relay::EventLoop& loop_;
  relay::UpstreamPool& pool_;
  ImageRecords records_;
  RenameJob job_;
  std::function<void(RenameOutcome)> done_;
  ImageRecord source_;                       // the id record: target and labels
  std::vector<std::string> registry_names_;  // candidates for removal
  std::vector<std::string> removed_;
  size_t next_ = 0;
  std::chrono::steady_clock::time_point waited_from_;
  RenameOutcome outcome_;
};

}  // namespace

void HoldUnderRequestedName(relay::EventLoop& loop, relay::UpstreamPool& pool, RenameJob job,
                            std::function<void(RenameOutcome)> done) {
  auto renamer = std::make_shared<Renamer>(loop, pool, std::move(job), std::move(done));
  renamer->Start();
}

}  // namespace shim::cri
