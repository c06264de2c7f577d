#include "config/configmap.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <optional>
#include <set>

#include "image/reference.h"

namespace shim::config {
namespace {

// Keys of the payload that map one to one onto keys of the local file.
const std::vector<std::string> kCopiedKeys = {
    "address",          "auth",       "registries", "force", "debug", "timeout", "reloadInterval",
    "fallbackToOrigin", "imageNames", "pin",        "allow", "deny",  "prePull"};
// Keys that describe the node itself: accepted in the payload only to be ignored with a warning.
const std::vector<std::string> kNodeKeys = {"shim", "cri", "configMap", "metricsAddress",
                                            "stateDir"};

bool Contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

// A Secret name as Kubernetes accepts it (a DNS subdomain): lower-case letters, digits, '-' and
// '.', starting and ending with a letter or digit, at most 253 characters.
bool IsSecretName(const std::string& name) {
  if (name.empty() || name.size() > 253) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(name.front()) || !alnum(name.back())) return false;
  return std::all_of(name.begin(), name.end(),
                     [&](char c) { return alnum(c) || c == '-' || c == '.'; });
}

std::string Emit(const YAML::Node& node) {
  YAML::Emitter out;
  out << node;
  return std::string(out.c_str()) + "\n";
}

class PayloadConverter {
 public:
  PayloadConverter(std::string source, ConvertedPayload* result, const SecretLookup& secrets,
                   std::string secret_namespace)
      : source_(std::move(source)),
        result_(result),
        secrets_(secrets),
        secret_namespace_(std::move(secret_namespace)) {}

  // The payload as a map in the local file's keys, or nullopt after reporting errors.
  std::optional<YAML::Node> Convert(const std::string& text) {
    YAML::Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::ParserException& e) {
      std::string where;
      if (!e.mark.is_null()) {
        where = "line " + std::to_string(e.mark.line + 1) + ", column " +
                std::to_string(e.mark.column + 1) + ": ";
      }
      Error("", where + "YAML syntax error: " + e.msg);
      return std::nullopt;
    } catch (const std::exception& e) {
      Error("", std::string("cannot read YAML: ") + e.what());
      return std::nullopt;
    }
    try {
      return ConvertRoot(root);
    } catch (const std::exception& e) {
      // Types are checked before conversion; this keeps a yaml-cpp surprise from crashing.
      Error("", std::string("invalid payload: ") + e.what());
      return std::nullopt;
    }
  }

 private:
  void Error(const std::string& key, const std::string& message) {
    result_->errors.push_back(source_ + ": " + (key.empty() ? "" : key + ": ") + message);
  }
  void Warn(const std::string& key, const std::string& message) {
    result_->warnings.push_back(source_ + ": " + (key.empty() ? "" : key + ": ") + message);
  }

  // {username, password} (the ConfigMap form) or "user:password" (the file form) -> the file
  // form. Values are secrets: no message shows them.
  std::optional<YAML::Node> Auth(const YAML::Node& node, const std::string& key) {
    if (node.IsNull() || node.IsScalar()) return node.IsNull() ? YAML::Node("") : node;
    if (!node.IsMap()) {
      Error(key, "expected {username: ..., password: ...} or \"user:password\"");
      return std::nullopt;
    }
    std::string username;
    std::string password;
    for (const auto& item : node) {
      std::string name = item.first.IsScalar() ? item.first.Scalar() : "";
      if (name != "username" && name != "password") {
        Warn(key + "." + (name.empty() ? "?" : name),
             "unknown key, ignored (known keys: username, password)");
        continue;
      }
      if (!item.second.IsNull() && !item.second.IsScalar()) {
        Error(key + "." + name, "expected a string");
        return std::nullopt;
      }
      (name == "username" ? username : password) = item.second.IsNull() ? "" : item.second.Scalar();
    }
    if (username.empty() && password.empty()) return YAML::Node("");
    if (username.empty() || password.empty()) {
      Error(key, "username and password must both be set (or both empty for anonymous access)");
      return std::nullopt;
    }
    if (username.find(':') != std::string::npos) {
      Error(key + ".username", "must not contain ':'");
      return std::nullopt;
    }
    return YAML::Node(username + ":" + password);
  }

  // `authSecret` of one entry: the credentials its Secret holds for the entry's address, in the
  // file form. nullopt: no override (keep the entry's `auth`, or none); errors are reported.
  struct SecretResult {
    bool failed = false;
    std::optional<YAML::Node> auth;
  };
  // `auth_path`: where the credentials land in the converted text ("auth", "registries[1].auth").
  SecretResult FromSecret(const YAML::Node& secret, const YAML::Node& address, bool has_auth,
                          const std::string& key, const std::string& auth_path) {
    SecretResult out;
    std::string name = secret.IsScalar() ? secret.Scalar() : "";
    if (!IsSecretName(name)) {
      Error(key, "expected the name of a Secret (lower-case letters, digits, '-' and '.')");
      out.failed = true;
      return out;
    }
    std::string host = address && address.IsScalar() ? RegistryHostKey(address.Scalar()) : "";
    if (host.empty()) {
      Error(key, "needs a valid address in the same entry (the Secret's entry is found by host)");
      out.failed = true;
      return out;
    }
    if (!secrets_) {
      Warn(key,
           "Secret \"" + name + "\" is not read here; " +
               (has_auth ? "the entry's auth is shown" : "the entry is shown without credentials"));
      return out;
    }
    SecretAuth answer = secrets_(name, host);
    if (answer.ok()) {
      if (answer.username.empty() || answer.password.empty() ||
          answer.username.find(':') != std::string::npos) {
        Error(key, "Secret \"" + name + "\": the entry for " + host +
                       " has an empty user name or password, or a ':' in the user name");
        out.failed = true;
        return out;
      }
      out.auth = YAML::Node(answer.username + ":" + answer.password);
      result_->secret_auths[auth_path] = "Secret " + secret_namespace_ + "/" + name;
      return out;
    }
    if (has_auth) {
      Warn(key, answer.problem + "; the entry's auth is used until the Secret supplies them");
      return out;
    }
    Error(key, answer.problem);
    out.failed = true;
    return out;
  }

  std::optional<YAML::Node> Registries(const YAML::Node& node) {
    if (node.IsNull()) return YAML::Node(YAML::NodeType::Sequence);
    if (!node.IsSequence()) {
      Error("registries", "expected a list of registries (- address: ...)");
      return std::nullopt;
    }
    YAML::Node out(YAML::NodeType::Sequence);
    bool ok = true;
    for (size_t i = 0; i < node.size(); ++i) {
      std::string key = "registries[" + std::to_string(i) + "]";
      const YAML::Node& entry = node[i];
      if (!entry.IsMap()) {
        Error(key, "expected a map with address and auth");
        ok = false;
        continue;
      }
      YAML::Node copy = YAML::Clone(entry);
      if (entry["auth"]) {
        std::optional<YAML::Node> auth = Auth(entry["auth"], key + ".auth");
        if (!auth) {
          ok = false;
          continue;
        }
        copy["auth"] = *auth;
      }
      if (entry["authSecret"]) {
        copy.remove("authSecret");  // not a key of the local file
        SecretResult secret =
            FromSecret(entry["authSecret"], entry["address"], static_cast<bool>(entry["auth"]),
                       key + ".authSecret", "registries[" + std::to_string(out.size()) + "].auth");
        if (secret.failed) {
          ok = false;
          continue;
        }
        if (secret.auth) copy["auth"] = *secret.auth;
      }
      out.push_back(copy);
    }
    if (!ok) return std::nullopt;
    return out;
  }

  std::optional<YAML::Node> ConvertRoot(const YAML::Node& root) {
    if (root.IsNull()) {
      Error("", "empty: expected a map with sealos, registries, ...");
      return std::nullopt;
    }
    if (!root.IsMap()) {
      Error("", "expected a map of settings at the top level");
      return std::nullopt;
    }
    YAML::Node out(YAML::NodeType::Map);
    std::set<std::string> seen;
    size_t errors = result_->errors.size();
    for (const auto& item : root) {
      if (!item.first.IsScalar()) {
        Error("", "a key is not a name");
        continue;
      }
      std::string key = item.first.Scalar();
      if (!seen.insert(key).second) {
        Error(key, "appears more than once");
        continue;
      }
      const YAML::Node& value = item.second;
      if (key == "version") {
        if (!value.IsScalar() || value.Scalar() != "v1") {
          Error(key, "only \"v1\" is understood");
        }
      } else if (key == "sealos") {
        if (value.IsNull()) continue;
        if (!value.IsMap()) {
          Error(key, "expected a map with address and auth");
          continue;
        }
        for (const auto& field : value) {
          std::string name = field.first.IsScalar() ? field.first.Scalar() : "";
          if (name == "address") {
            out["address"] = YAML::Clone(field.second);
          } else if (name == "auth") {
            if (std::optional<YAML::Node> auth = Auth(field.second, "sealos.auth")) {
              out["auth"] = *auth;
            }
          } else if (name == "authSecret") {
            continue;  // below, once the address is known
          } else {
            Warn("sealos." + (name.empty() ? "?" : name),
                 "unknown key, ignored (known keys: address, auth, authSecret)");
          }
        }
        if (value["authSecret"]) {
          SecretResult secret =
              FromSecret(value["authSecret"], value["address"], static_cast<bool>(value["auth"]),
                         "sealos.authSecret", "auth");
          if (secret.auth) out["auth"] = *secret.auth;
        }
      } else if (key == "registries") {
        if (std::optional<YAML::Node> list = Registries(value)) out["registries"] = *list;
      } else if (key == "auth") {
        if (std::optional<YAML::Node> auth = Auth(value, "auth")) out["auth"] = *auth;
      } else if (key == "authSecret") {
        continue;  // below, once the address is known
      } else if (Contains(kCopiedKeys, key)) {
        out[key] = YAML::Clone(value);
      } else if (Contains(kNodeKeys, key)) {
        Warn(key, "belongs to the node's own file and is never taken from the ConfigMap; ignored");
      } else {
        Warn(key,
             "unknown key, ignored (known keys: version, sealos, registries, reloadInterval, "
             "force, debug, timeout, fallbackToOrigin, imageNames, pin, allow, deny, prePull)");
      }
    }
    if (root["authSecret"]) {
      // Settles after `auth` whatever the order of the keys: the Secret wins when it answers.
      SecretResult secret = FromSecret(root["authSecret"], root["address"],
                                       static_cast<bool>(root["auth"]), "authSecret", "auth");
      if (secret.auth) out["auth"] = *secret.auth;
    }
    if (seen.count("sealos") && seen.count("address")) {
      Error("address",
            "give the primary registry either as sealos.address or as address, not both");
    }
    if (result_->errors.size() != errors) return std::nullopt;
    return out;
  }

  std::string source_;
  ConvertedPayload* result_;
  const SecretLookup& secrets_;
  std::string secret_namespace_;
};

}  // namespace

std::string RegistryHostKey(const std::string& text) {
  std::string scheme = "https";
  std::string_view rest = text;
  if (size_t sep = text.find("://"); sep != std::string::npos) {
    scheme = text.substr(0, sep);
    std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    rest.remove_prefix(sep + 3);
  }
  std::string host = NormaliseHostPort(rest.substr(0, rest.find('/')), scheme);
  if (host.empty() || !image::ValidateDomain(host).ok()) return "";
  return image::CanonicalDomain(host);
}

std::vector<std::string> ReferencedSecrets(const std::string& payload) {
  std::set<std::string> names;
  try {
    YAML::Node root = YAML::Load(payload);
    if (!root.IsMap()) return {};
    auto add = [&](const YAML::Node& entry) {
      if (!entry.IsMap()) return;
      YAML::Node secret = entry["authSecret"];
      if (secret && secret.IsScalar() && IsSecretName(secret.Scalar())) {
        names.insert(secret.Scalar());
      }
    };
    add(root);
    if (root["sealos"]) add(root["sealos"]);
    if (YAML::Node list = root["registries"]; list && list.IsSequence()) {
      for (const auto& entry : list) add(entry);
    }
  } catch (const std::exception&) {
    return {};
  }
  return {names.begin(), names.end()};
}

ConvertedPayload ConvertPayload(const std::string& payload, const std::string& source,
                                const SecretLookup& secrets, const std::string& secret_namespace) {
  ConvertedPayload result;
  std::optional<YAML::Node> converted =
      PayloadConverter(source, &result, secrets, secret_namespace).Convert(payload);
  if (!converted) return result;
  try {
    result.text = Emit(*converted);
  } catch (const std::exception& e) {
    result.errors.push_back(source + ": cannot convert: " + e.what());
  }
  return result;
}

}  // namespace shim::config
