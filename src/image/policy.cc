#include "image/policy.h"

namespace shim::image {
namespace {

std::string Joined(const std::vector<std::string>& list) {
  std::string out;
  for (const auto& item : list) out += (out.empty() ? "" : ", ") + item;
  return out;
}

}  // namespace

std::string Refusal::Message(const std::string& image) const {
  return "image-cri-shim: pull of " + image + " refused by the node's pull policy: " + rule;
}

std::optional<Refusal> CheckPolicy(const Reference& reference, const config::Config& config) {
  if (const std::string* rule = MatchingPrefix(config.deny, reference)) {
    return Refusal{"deny \"" + *rule + "\" matches it", "deny:" + *rule};
  }
  if (!config.allow.empty() && MatchingPrefix(config.allow, reference) == nullptr) {
    return Refusal{"no `allow` entry matches it (allow: " + Joined(config.allow) + ")", "allow"};
  }
  return std::nullopt;
}

std::optional<Refusal> CheckUncheckable(const config::Config& config) {
  if (config.allow.empty() && config.deny.empty()) return std::nullopt;
  return Refusal{"it is not an image name that `allow` and `deny` can be checked against",
                 "unchecked"};
}

}  // namespace shim::image
