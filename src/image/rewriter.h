// Turns an image reference and a configuration into the ordered list of places to pull it from.
// Pure function of its inputs; thread-safe.
#pragma once

#include <string>
#include <vector>

#include "config/config.h"
#include "image/reference.h"

namespace shim::image {

struct Candidate {
  std::string image;                // full reference to ask the runtime for
  std::string registry;             // host[:port][/path] it goes to, for logs ("docker.io" ...)
  int registry_index = -1;          // index into Config::registries; -1 = the image's own origin
  config::Credentials credentials;  // the configured registry's; empty for the origin candidate
  bool is_origin() const { return registry_index < 0; }
};

// Whose pull it is. A registry with `namespaces` (and so its credentials) serves only pulls for
// pods in those namespaces.
struct PullScope {
  std::string pod_namespace;  // the pod's namespace; "" for a pull without a pod (crictl, prePull)

  static PullScope ForPod(std::string pod_namespace) { return {std::move(pod_namespace)}; }
  // Name lookups (status, remove, list, create): they carry no pod, so like a pull without one
  // they see only registries without `namespaces`. An image a tenant's registry served is
  // therefore never found by kubelet's name for another namespace's pod, which must pull it.
  static PullScope Lookup() { return {""}; }
};

// The image names a registry with `namespaces` (on its host, under its path): what the runtime
// holds under such a name came with a tenant's credentials.
bool OnNamespaceScopedRegistry(const Reference& reference, const config::Config& config);

// Order: if the image is already on a configured registry (same host and port), that one
// candidate with that registry's credentials; otherwise one candidate per configured registry
// that serves it (`address` first, then `registries`), then the original reference when
// fallback_to_origin is on. When no configured registry serves the image (prefixes), the
// original reference is the only candidate: the shim then changes nothing. Never empty.
// Registries the scope may not use are left out; an image on such a registry has only its
// origin as candidate (with the caller's credentials, never the registry's).
std::vector<Candidate> Rewrite(const Reference& reference, const config::Config& config,
                               const PullScope& scope);

}  // namespace shim::image
