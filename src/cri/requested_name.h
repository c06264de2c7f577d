// After a pull under a registry's name (registry.company.com/library/nginx:latest), the same
// image held under the name kubelet asked for (docker.io/library/nginx:latest) and no longer
// under the registry's, through containerd's image records:
//   1. read the image id record the pull created (its target and the CRI plugin's labels);
//   2. create or update the requested name's records (tag and digest, as a direct pull of that
//      name would) with that target, the same labels, and two of the shim's own saying where
//      the image came from;
//   3. delete the registry-named records this pull created; a record that existed before the
//      pull, points at other content, or is the name another pull in flight asks for stays;
//   4. wait until the CRI plugin (which learns of records through events) answers ImageStatus
//      under the new names, so a status call right after the pull's answer sees them.
// Nothing here fails the pull: on an error the image stays (also) under the registry's name,
// where the shim's name translation finds it.
//
// Loop thread only.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "image/reference.h"
#include "relay/event_loop.h"
#include "relay/upstream.h"

namespace shim::cri {

// Labels on the records of an image the shim holds under the requested name.
inline constexpr char kRegistryLabel[] = "io.image-cri-shim.registry";   // "registry.company.com"
inline constexpr char kPulledAsLabel[] = "io.image-cri-shim.pulled-as";  // the registry's name

struct RenameJob {
  image::Reference requested;  // normalised: the name kubelet asked for
  image::Reference pulled;     // normalised: the name the runtime pulled
  std::string registry;        // host[:port][/path] the image came from
  std::string image_id;        // the pull's answer: "sha256:<config digest>"
  // Taken before the pull that created the registry-named records: older ones are not its own.
  std::chrono::system_clock::time_point pull_started;
  std::string status_path;  // CRI ImageStatus path of the caller's API version
  // True for a record name that another pull in flight asks for: never deleted under it.
  std::function<bool(const std::string& name)> wanted_elsewhere;
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
