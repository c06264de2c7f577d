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

// The values live in config/ (config/inputs.h): they are part of the configuration inputs.
using config::DockerAuth;
using config::DockerConfig;
using config::SecretAuthFor;

// Parses the JSON text of `.dockerconfigjson`. Per entry: username and password when both are
// given; otherwise `auth` (base64 of "user:password", split at the first ':', so a password
// may contain ':'). An entry with only a token (identitytoken, registrytoken) is unusable.
DockerConfig ParseDockerConfigJson(std::string_view json);

// A Secret as the API gives it: checks its type, decodes `.dockerconfigjson` from base64 and
// parses it. `name` ("kube-system/x") is used in error texts.
DockerConfig DockerConfigFromSecret(const ObjectState& secret, const std::string& name);

}  // namespace shim::kube
