// Which images a node may pull at all: `deny` and `allow`, lists of prefixes matched against the
// normalised requested name (docker.io/library/redis:7), whole path components as `prefixes`.
// Pure function of its inputs; thread-safe.
#pragma once

#include <optional>
#include <string>

#include "config/config.h"
#include "image/reference.h"

namespace shim::image {

// Why a pull is refused: the rule, as the configuration wrote it once normalised.
struct Refusal {
  std::string rule;    // `deny "docker.io/"` or `allow` (no entry matched)
  std::string metric;  // a bounded label for the refusal metric: "deny:docker.io/" or "allow"
  std::string Message(const std::string& image) const;
};

// nullopt when the image may be pulled: `deny` wins over `allow`; an empty `allow` allows
// everything.
std::optional<Refusal> CheckPolicy(const Reference& reference, const config::Config& config);

// For a name that is no image reference the policy can judge (an image id, an unparsable name):
// refused whenever `allow` or `deny` is set, since the runtime may still read it as a name on
// some registry; nullopt without a policy.
std::optional<Refusal> CheckUncheckable(const config::Config& config);

}  // namespace shim::image
