// Registry credentials from a Kubernetes Secret of type kubernetes.io/dockerconfigjson: the
// `.dockerconfigjson` key (base64 in the API's `data`) holds
//
//   {"auths": {"<registry>": {"username": U, "password": P, "auth": base64(U:P)}}}
//
// as `kubectl create secret docker-registry` writes it. Pure functions on values: callable
// from any thread. Error texts never contain a user name, password or `auth` value.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/configmap.h"
#include "kube/object_watch.h"

namespace shim::kube {

inline constexpr std::string_view kDockerConfigJsonType = "kubernetes.io/dockerconfigjson";
inline constexpr std::string_view kDockerConfigJsonKey = ".dockerconfigjson";

// One entry of `auths`, or why it cannot be used.
struct DockerAuth {
  std::string username;
  std::string password;
  std::string error;  // set: unusable (never a secret)
  bool ok() const { return error.empty(); }
};

struct DockerConfig {
  std::string error;  // set: the whole document is unusable (never a secret)
  // In the document's order; the key as written ("reg.example.com:5000", "https://reg/v1/").
  std::vector<std::pair<std::string, DockerAuth>> auths;
  bool ok() const { return error.empty(); }

  // The entry for the registry host `host` (as config::RegistryHostKey gives it:
  // "reg.example.com", "reg.example.com:5000"). Keys match after the same normalisation
  // (scheme, path, default port and case dropped), so "https://Reg.example.com/v1/" matches
  // "reg.example.com". A key written exactly as `host` wins over one that only normalises to
  // it; otherwise the first in the document. nullptr when none matches.
  const DockerAuth* Find(std::string_view host) const;
};

// Parses the JSON text of `.dockerconfigjson`. Per entry: username and password when both are
// given; otherwise `auth` (base64 of "user:password", split at the first ':', so a password
// may contain ':'). An entry with only a token (identitytoken, registrytoken) is unusable.
DockerConfig ParseDockerConfigJson(std::string_view json);

// A Secret as the API gives it: checks its type, decodes `.dockerconfigjson` from base64 and
// parses it. `name` ("kube-system/x") is used in error texts.
DockerConfig DockerConfigFromSecret(const ObjectState& secret, const std::string& name);

// What the Secret `name` ("kube-system/x"), read as `config`, supplies for the registry `host`
// (config::RegistryHostKey form): user name and password, or the problem, in the form the
// ConfigMap merge takes (config::SecretLookup).
config::SecretAuth SecretAuthFor(const DockerConfig& config, const std::string& name,
                                 std::string_view host);

}  // namespace shim::kube
