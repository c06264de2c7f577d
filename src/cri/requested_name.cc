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

// A registry-named record this pull may delete: its own, or one taken over from earlier pulls.
struct RegistryRecord {
  std::string name;
  std::chrono::system_clock::time_point since;  // created before this: not ours to delete
  std::string digest;                           // naming other content: not ours either
};

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
      if (!Contains(outcome_.held_as, name)) {
        registry_records_.push_back({name, job_.pull_started, digest});
      }
    }
    if (job_.left == nullptr) return;
    taken_ = job_.left->Take(job_.pulled.Name());
    for (const auto& left : taken_) {
      if (Contains(outcome_.held_as, left.name)) continue;  // the requested name now
      auto own = std::find_if(registry_records_.begin(), registry_records_.end(),
                              [&](const RegistryRecord& r) { return r.name == left.name; });
      if (own != registry_records_.end()) {
        // This pull updated it: its content is ours, its creation may be the earlier pull's.
        own->since = std::min(own->since, left.since);
      } else {
        registry_records_.push_back({left.name, left.since, left.digest});
      }
    }
  }

  // True (and noted) when another pull in flight wants `record` now.
  bool WantedElsewhere(const RegistryRecord& record) {
    WantedBy by = job_.wanted_elsewhere ? job_.wanted_elsewhere(record.name) : WantedBy::kNobody;
    switch (by) {
      case WantedBy::kNobody:
        return false;
      case WantedBy::kAskedFor:
        outcome_.kept.push_back(record.name + " (another pull in flight asks for it)");
        return true;
      case WantedBy::kBeingPulled:
        outcome_.kept.push_back(
            record.name +
            " (another pull of the repository is in flight; the last one deletes it)");
        if (job_.left != nullptr) {
          job_.left->Leave({record.name, job_.pulled.Name(), record.since, record.digest});
        }
        return true;
    }
    return true;
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

  // Step 3: the registry-named records, each only if this pull (or one that handed it over)
  // created it.
  void RemoveNext() {
    if (next_ == registry_records_.size()) return WaitVisible();
    RegistryRecord candidate = registry_records_[next_++];
    if (WantedElsewhere(candidate)) return RemoveNext();
    records_.Get(candidate.name, [self = shared_from_this(), candidate](const UnaryResult& result,
                                                                        const ImageRecord* record) {
      const std::string& name = candidate.name;
      if (record == nullptr) {
        if (!result.answered || result.code != static_cast<int>(relay::GrpcCode::kNotFound)) {
          self->outcome_.kept.push_back(name + " (cannot read it: " + Why(result) + ")");
        }
        return self->RemoveNext();
      }
      if (TimeOf(record->created_at()) < candidate.since) {
        self->outcome_.kept.push_back(name + " (it was there before this pull)");
        return self->RemoveNext();
      }
      if (record->target().digest() != candidate.digest) {
        self->outcome_.kept.push_back(name + " (it now names other content)");
        return self->RemoveNext();
      }
      // Asked again: a pull of the repository may have started while the record was read.
      if (self->WantedElsewhere(candidate)) return self->RemoveNext();
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
    // What was taken over is not decided: it stays left for the next pull of the repository.
    if (job_.left != nullptr) {
      for (auto& left : taken_) job_.left->Leave(std::move(left));
    }
    taken_.clear();
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
  ImageRecord source_;                            // the id record: target and labels
  std::vector<RegistryRecord> registry_records_;  // candidates for removal
  std::vector<LeftRecords::Left> taken_;          // taken over from earlier pulls
  std::vector<std::string> removed_;
  size_t next_ = 0;
  std::chrono::steady_clock::time_point waited_from_;
  RenameOutcome outcome_;
};

}  // namespace

void LeftRecords::Leave(Left left) {
  auto [it, inserted] = left_.try_emplace(left.name, left);
  if (!inserted) {
    auto since = std::min(it->second.since, left.since);
    it->second = std::move(left);
    it->second.since = since;
    return;
  }
  if (left_.size() <= kMaxLeft) return;
  auto oldest = std::min_element(left_.begin(), left_.end(), [](const auto& a, const auto& b) {
    return a.second.since < b.second.since;
  });
  spdlog::info("image record {} stays: too many records are waiting for their pulls to finish",
               oldest->first);
  left_.erase(oldest);
}

std::vector<LeftRecords::Left> LeftRecords::Take(const std::string& repository) {
  std::vector<Left> taken;
  for (auto it = left_.begin(); it != left_.end();) {
    if (it->second.repository == repository) {
      taken.push_back(std::move(it->second));
      it = left_.erase(it);
    } else {
      ++it;
    }
  }
  return taken;
}

void HoldUnderRequestedName(relay::EventLoop& loop, relay::UpstreamPool& pool, RenameJob job,
                            std::function<void(RenameOutcome)> done) {
  auto renamer = std::make_shared<Renamer>(loop, pool, std::move(job), std::move(done));
  renamer->Start();
}

}  // namespace shim::cri
