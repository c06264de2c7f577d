#include "kube/docker_config.h"

#include <nlohmann/json.hpp>

#include "config/configmap.h"
#include "kube/credentials.h"

namespace shim::kube {
namespace {

using Json = nlohmann::json;

// A string member of an entry, "" when absent; false when present but not a string.
bool StringField(const Json& entry, const char* name, std::string* out) {
  auto it = entry.find(name);
  if (it == entry.end() || it->is_null()) return true;
  if (!it->is_string()) return false;
  *out = it->get<std::string>();
  return true;
}

DockerAuth ParseEntry(const Json& entry) {
  DockerAuth out;
  if (!entry.is_object()) {
    out.error = "is not an object with username and password or auth";
    return out;
  }
  std::string username;
  std::string password;
  std::string auth;
  if (!StringField(entry, "username", &username) || !StringField(entry, "password", &password) ||
      !StringField(entry, "auth", &auth)) {
    out.error = "username, password and auth must be strings";
    return out;
  }
  if (!username.empty() && !password.empty()) {
    out.username = std::move(username);
    out.password = std::move(password);
  } else if (!auth.empty()) {
    std::optional<std::string> decoded = DecodeBase64(auth);
    if (!decoded) {
      out.error = "auth is not base64";
      return out;
    }
    size_t colon = decoded->find(':');
    if (colon == std::string::npos) {
      out.error = "auth is not base64 of \"user:password\" (no ':')";
      return out;
    }
    out.username = decoded->substr(0, colon);
    out.password = decoded->substr(colon + 1);
  } else if (entry.contains("identitytoken") || entry.contains("registrytoken")) {
    out.error = "has only a token (identitytoken/registrytoken), which the shim cannot use";
    return out;
  } else {
    out.error = "has neither username and password nor auth";
    return out;
  }
  if (out.username.empty() || out.password.empty()) {
    out = DockerAuth{};
    out.error = "has an empty user name or password";
  } else if (out.username.find(':') != std::string::npos) {
    out = DockerAuth{};
    out.error = "has a user name with ':'";
  } else if (out.username.find_first_of("\r\n") != std::string::npos ||
             out.password.find_first_of("\r\n") != std::string::npos) {
    out = DockerAuth{};
    out.error = "has a line break in the user name or password";
  }
  return out;
}

}  // namespace

DockerConfig ParseDockerConfigJson(std::string_view json) {
  DockerConfig out;
  Json document = Json::parse(json, nullptr, false);
  if (document.is_discarded()) {
    // nlohmann's parse error names a byte position and the character: it could show part of a
    // password, so only the kind of problem is told.
    out.error = ".dockerconfigjson is not valid JSON";
    return out;
  }
  if (!document.is_object()) {
    out.error = ".dockerconfigjson is not a JSON object";
    return out;
  }
  auto auths = document.find("auths");
  if (auths == document.end() || !auths->is_object()) {
    out.error = ".dockerconfigjson has no \"auths\" object";
    return out;
  }
  for (const auto& [key, entry] : auths->items()) out.auths.emplace_back(key, ParseEntry(entry));
  return out;
}

DockerConfig DockerConfigFromSecret(const ObjectState& secret, const std::string& name) {
  DockerConfig out;
  if (!secret.exists) {
    out.error = "Secret " + name + " does not exist";
    return out;
  }
  if (secret.type != kDockerConfigJsonType) {
    out.error = "Secret " + name + " is of type \"" + secret.type + "\", not " +
                std::string(kDockerConfigJsonType);
    return out;
  }
  auto it = secret.data.find(std::string(kDockerConfigJsonKey));
  if (it == secret.data.end()) {
    out.error = "Secret " + name + " has no key " + std::string(kDockerConfigJsonKey);
    return out;
  }
  std::optional<std::string> json = DecodeBase64(it->second);
  if (!json) {
    out.error = "Secret " + name + ": " + std::string(kDockerConfigJsonKey) + " is not base64";
    return out;
  }
  out = ParseDockerConfigJson(*json);
  if (!out.ok()) out.error = "Secret " + name + ": " + out.error;
  return out;
}

}  // namespace shim::kube
