// The shim's configuration: one immutable value, built and validated once by the loader and then
// shared read-only (std::shared_ptr<const Config>) by every thread. A reload builds a new value
// and swaps the pointer; a call in flight keeps the snapshot it started with.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace shim::config {

struct Credentials {
  std::string username;
  std::string password;  // never logged, never printed: see Masked()
  bool empty() const { return username.empty() && password.empty(); }
  bool operator==(const Credentials&) const = default;
};

// One registry the shim may send pulls to.
struct Registry {
  std::string address;  // normalised URL: scheme://host[:port][/path], no trailing slash
  std::string scheme;   // "https" or "http"
  std::string host;     // host[:port] as it appears in image references, lower case,
                        // default port dropped, Docker Hub aliases folded to "docker.io"
  std::string path;     // "" or "/proxy-cache": kept in rewritten names
  Credentials auth;     // empty = anonymous
  // Normalised source prefixes ("docker.io/myteam/", "quay.io/"): this registry serves only
  // images whose normalised name starts with one of them. Empty = serves every image.
  std::vector<std::string> prefixes;
  // Namespace patterns (`namespaces`): exact names ("team-b") or a prefix and '*' ("tenant-*",
  // "*"). This registry, and so its credentials, serves only pulls whose pod sandbox namespace
  // matches one (NamespaceMatches); a pull without a pod never. Empty = serves every pull.
  std::vector<std::string> namespaces;
  std::string ca_file;                // extra CA for probing this registry ("" = system store)
  bool insecure_skip_verify = false;  // probing only; warned about at start
  bool operator==(const Registry&) const = default;
};

struct KubeSync {
  bool enabled = true;
  std::string namespace_ = "kube-system";
  std::string name = "image-cri-shim";
  std::string key = "registries.yaml";
  bool operator==(const KubeSync&) const = default;
};

struct Metrics {
  std::string address = "127.0.0.1:10258";  // "" = off
  bool operator==(const Metrics&) const = default;
};

// `imageNames`: under which name the runtime holds a pulled image.
enum class ImageNames {
  kRequested,  // the name kubelet asked for (containerd's image API re-points the records)
  kRegistry,   // the name of the registry that served it; kubelet's names are translated
};

struct Config {
  std::string shim_socket = "/var/run/image-cri-shim.sock";    // `shim`
  std::string cri_socket = "/run/containerd/containerd.sock";  // `cri`
  // registries[0] is `address` (the primary), then `registries` in configuration order.
  std::vector<Registry> registries;
  bool force = false;               // serve even if the runtime socket is not there at start
  bool debug = false;               // debug logging, applied live
  bool fallback_to_origin = false;  // try the image's own registry after the configured ones
  std::chrono::milliseconds timeout = std::chrono::minutes(15);          // one pull, all tries
  std::chrono::milliseconds reload_interval = std::chrono::seconds(30);  // re-read sources
  KubeSync kube;
  Metrics metrics;
  ImageNames image_names = ImageNames::kRequested;  // `imageNames`
  // `pin`: normalised image prefixes ("registry.k8s.io/pause/", as `prefixes`). Images held
  // under a matching name are reported `pinned`, so kubelet's image GC keeps them.
  std::vector<std::string> pin;
  // `allow` and `deny`: normalised image prefixes, as `pin`. A pull whose normalised requested
  // name matches a `deny` entry, or no `allow` entry when `allow` is not empty, is refused.
  std::vector<std::string> allow;
  std::vector<std::string> deny;
  // `prePull`: normalised image references (image::Reference::String()), each once, pulled
  // through the shim at start and whenever the list changes.
  std::vector<std::string> pre_pull;
  // `stateDir`: the last ConfigMap input that was applied is kept here, so a restart while the
  // API server is unreachable serves it. "" = nothing is kept.
  std::string state_dir = "/var/lib/image-cri-shim";
  // Every field: a reload that changes nothing can be told from one that does.
  bool operator==(const Config&) const = default;

  // Some registry serves only pods of given namespaces (`namespaces`).
  bool AnyRegistryHasNamespaces() const {
    for (const Registry& registry : registries) {
      if (!registry.namespaces.empty()) return true;
    }
    return false;
  }
};

using ConfigPtr = std::shared_ptr<const Config>;

// "user:****" for a credential, "" for anonymous: the only form credentials are shown in.
std::string Masked(const Credentials& credentials);

// Whether the namespace `ns` matches one of `patterns` (Registry::namespaces): equal to an exact
// entry, or starting with the part before the '*' of a "prefix*" entry ("*" matches any). An
// empty `ns` (a pull without a pod) matches nothing.
bool NamespaceMatches(const std::vector<std::string>& patterns, std::string_view ns);

}  // namespace shim::config
