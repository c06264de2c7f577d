// After a pull under a registry's name (registry.company.com/library/nginx:latest), the same
// image held under the name kubelet asked for (docker.io/library/nginx:latest) and no longer
// under the registry's, through containerd's image records:
//   1. read the image id record the pull created (its target and the CRI plugin's labels);
//   2. create or update the requested name's records (tag and digest, as a direct pull of that
//      name would) with that target, the same labels, and two of the shim's own saying where
//      the image came from;
//   3. delete the registry-named records this pull created; a record that existed before the
//      pull, points at other content, or is the name another pull in flight asks for stays.
//      One that another pull of the same repository, still being made by the runtime, reads
//      back stays too, and its deletion is handed over (LeftRecords) to the pulls that finish
//      after it;
//   4. wait until the CRI plugin (which learns of records through events) answers ImageStatus
//      under the new names, so a status call right after the pull's answer sees them.
// Nothing here fails the pull: on an error the image stays (also) under the registry's name,
// where the shim's name translation finds it.
//
// Loop thread only.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "image/reference.h"
#include "relay/event_loop.h"
#include "relay/upstream.h"

namespace shim::cri {

// Labels on the records of an image the shim holds under the requested name.
inline constexpr char kRegistryLabel[] = "io.image-cri-shim.registry";   // "registry.company.com"
inline constexpr char kPulledAsLabel[] = "io.image-cri-shim.pulled-as";  // the registry's name

// Why a registry-named record must not be deleted now.
enum class WantedBy {
  kNobody,
  kAskedFor,  // another pull in flight asks for that very name: never deleted under it
  // The runtime is pulling the same repository for another pull: it creates these records and
  // reads them back before it answers, so one deleted in between fails that pull (NOT_FOUND).
  kBeingPulled,
};

// Registry-named records a pull left in place only because another pull of the same repository
// was still being made by the runtime (WantedBy::kBeingPulled). That other pull may find the
// record older than its own start and take it for one that was there before the shim pulled;
// so the next pull of the repository to rename takes the record over with the earliest start
// of the pulls that left it, and deletes it if it would have been theirs to delete. A pull that
// keeps the repository under the registry's names (imageNames: registry, no image API, a failed
// rename) drops what was left there: those names are wanted now.
// Loop thread only.
class LeftRecords {
 public:
  struct Left {
    std::string name;        // the record
    std::string repository;  // its domain/path
    // The earliest start of the pulls that left it: a record created before it was not theirs.
    std::chrono::system_clock::time_point since;
    std::string digest;  // what it named when it was left: other content is not theirs either
  };

  // Remembers `left`; left again, it keeps the earliest `since`. Bounded: when full, the entry
  // left longest ago goes (its record then stays under the registry's name).
  void Leave(Left left);
  // Removes and returns what was left of `repository`.
  std::vector<Left> Take(const std::string& repository);
  size_t size() const { return left_.size(); }

 private:
  static constexpr size_t kMaxLeft = 1024;
  std::map<std::string, Left> left_;  // by record name
};

struct RenameJob {
  image::Reference requested;  // normalised: the name kubelet asked for
  image::Reference pulled;     // normalised: the name the runtime pulled
  std::string registry;        // host[:port][/path] the image came from
  std::string image_id;        // the pull's answer: "sha256:<config digest>"
  // Taken before the pull that created the registry-named records: older ones are not its own.
  std::chrono::system_clock::time_point pull_started;
  std::string status_path;  // CRI ImageStatus path of the caller's API version
  // Whether another pull in flight wants a record name; asked before a record is read and again
  // right before it is deleted (a pull may start while it is read).
  std::function<WantedBy(const std::string& name)> wanted_elsewhere;
  // Where records left for other pulls go, and are taken over from; may be null. Must outlive
  // the job (the image service's own does).
  LeftRecords* left = nullptr;
};

struct RenameOutcome {
  bool ok = false;
  std::vector<std::string> held_as;  // the requested name's records, when ok
  std::vector<std::string> kept;     // registry-named records left in place, with the reason
  std::string error;                 // when !ok: what failed, for the log
};

// Runs the steps above; `done` runs once, on the loop thread, never from inside this call.
void HoldUnderRequestedName(relay::EventLoop& loop, relay::UpstreamPool& pool, RenameJob job,
                            std::function<void(RenameOutcome)> done);

}  // namespace shim::cri
