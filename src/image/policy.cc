#include "image/policy.h"

namespace shim::image {
namespace {

const std::string* FirstMatch(const std::vector<std::string>& prefixes,
                              const std::string& name_slash) {
  for (const std::string& prefix : prefixes) {
    if (name_slash.starts_with(prefix)) return &prefix;
  }
  return nullptr;
}

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
  const std::string name_slash = reference.Name() + "/";
  if (const std::string* rule = FirstMatch(config.deny, name_slash)) {
    return Refusal{"deny \"" + *rule + "\" matches it", "deny:" + *rule};
  }
  if (!config.allow.empty() && FirstMatch(config.allow, name_slash) == nullptr) {
    return Refusal{"no `allow` entry matches it (allow: " + Joined(config.allow) + ")", "allow"};
  }
  return std::nullopt;
}

}  // namespace shim::image
