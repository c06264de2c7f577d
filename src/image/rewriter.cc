#include "image/rewriter.h"

#include <string>

namespace shim::image {
namespace {

// Where a registry sits, for logs: host[:port][/path].
std::string Label(const config::Registry& registry) {
  return registry.host + registry.path;
}

// An image is on `registry` when it names the same host and, if the registry has a path, its
// repository lies under that path. Returns the length of the matched path, or -1.
int OnRegistryMatch(const Reference& reference, const config::Registry& registry) {
  if (reference.domain != registry.host) return -1;
  if (registry.path.empty()) return 0;
  std::string under = registry.path.substr(1) + "/";  // "/proxy-cache" -> "proxy-cache/"
  if (!reference.path.starts_with(under)) return -1;
  return static_cast<int>(registry.path.size());
}

bool InScope(const config::Registry& registry, const PullScope& scope) {
  return registry.namespaces.empty() ||
         config::NamespaceMatches(registry.namespaces, scope.pod_namespace);
}

// The configured registry `reference` is on (with several on one host, the longest matching
// path), or -1.
int RegistryOf(const Reference& reference, const std::vector<config::Registry>& registries) {
  int best = -1;
  int best_length = -1;
  for (size_t i = 0; i < registries.size(); ++i) {
    int length = OnRegistryMatch(reference, registries[i]);
    if (length > best_length) {
      best = static_cast<int>(i);
      best_length = length;
    }
  }
  return best;
}

Candidate Origin(const Reference& reference) {
  return Candidate{reference.String(), reference.domain, -1, {}};
}

}  // namespace

std::vector<Candidate> Rewrite(const Reference& reference, const config::Config& config,
                               const PullScope& scope) {
  const auto& registries = config.registries;

  // Already on a configured registry: pull it there as is.
  int best = RegistryOf(reference, registries);
  if (best >= 0) {
    const config::Registry& registry = registries[best];
    if (!InScope(registry, scope)) return {Origin(reference)};  // not this pod's registry
    return {Candidate{reference.String(), Label(registry), best, registry.auth}};
  }

  std::vector<Candidate> candidates;
  for (size_t i = 0; i < registries.size(); ++i) {
    const config::Registry& registry = registries[i];
    bool serves = registry.prefixes.empty() || MatchingPrefix(registry.prefixes, reference);
    if (!serves || !InScope(registry, scope)) continue;
    candidates.push_back(Candidate{Label(registry) + "/" + reference.PathWithTagAndDigest(),
                                   Label(registry), static_cast<int>(i), registry.auth});
  }
  // The origin gets the caller's own credentials (imagePullSecrets), never a configured one.
  if (config.fallback_to_origin || candidates.empty()) {
    candidates.push_back(Origin(reference));
  }
  return candidates;
}

bool OnNamespaceScopedRegistry(const Reference& reference, const config::Config& config) {
  int registry = RegistryOf(reference, config.registries);
  return registry >= 0 && !config.registries[registry].namespaces.empty();
}

}  // namespace shim::image
