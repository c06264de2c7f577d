#include "kube/credentials.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "util/file.h"

namespace shim::kube {
namespace {

// "" when `path` exists; else why not, with the system's reason ("no such file" is the common
// case, but a directory the shim may not search must not pass for a missing file).
std::string Absent(const std::string& path) {
  if (::access(path.c_str(), F_OK) == 0) return "";
  if (errno == ENOENT) return "no such file";
  return std::string("cannot check it: ") + std::strerror(errno);
}

// A scalar field of a map, "" when absent or not a scalar.
std::string Field(const YAML::Node& map, const char* key) {
  if (!map || !map.IsMap()) return "";
  YAML::Node value = map[key];
  return value && value.IsScalar() ? value.Scalar() : "";
}

// The entry named `name` of a kubeconfig list (clusters, users, contexts): `item[field]`.
YAML::Node Named(const YAML::Node& list, const std::string& name, const char* field) {
  if (!list || !list.IsSequence()) return YAML::Node();
  for (const auto& item : list) {
    if (item.IsMap() && Field(item, "name") == name) return item[field];
  }
  return YAML::Node();
}

std::string Resolve(const std::string& file, const std::string& base_dir) {
  if (file.empty() || file.front() == '/') return file;
  return (std::filesystem::path(base_dir) / file).string();
}

std::string StripTrailingSlash(std::string text) {
  while (!text.empty() && text.back() == '/') text.pop_back();
  return text;
}

}  // namespace

std::string Credentials::Describe() const {
  std::string auth;
  if (!token.empty()) {
    auth = "bearer token";
  } else if (!token_file.empty()) {
    auth = "bearer token from " + token_file;
  }
  if (!client_cert_file.empty() || !client_cert_data.empty()) {
    auth += auth.empty() ? "" : " and ";
    auth += "client certificate" + (client_cert_file.empty() ? "" : " " + client_cert_file);
  }
  if (auth.empty()) auth = "none";
  std::string tls = insecure_skip_tls_verify ? "TLS verification off"
                    : !ca_file.empty()       ? "CA " + ca_file
                    : !ca_data.empty()       ? "CA from certificate-authority-data"
                                             : "system CAs";
  return source + " (" + (context.empty() ? "" : "context " + context + ", ") + "server " + server +
         ", auth " + auth + ", " + tls + ")";
}

std::optional<std::string> DecodeBase64(std::string_view text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  std::string out;
  unsigned buffer = 0;
  int bits = 0;
  bool padding = false;
  for (char c : text) {
    if (c == '\n' || c == '\r' || c == ' ' || c == '\t') continue;
    if (c == '=') {
      padding = true;
      continue;
    }
    int v = value(c);
    if (v < 0 || padding) return std::nullopt;
    buffer = (buffer << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xFF));
    }
  }
  if (bits >= 6) return std::nullopt;  // a lone 6-bit group cannot end a valid encoding
  return out;
}

StatusOr<Credentials> ParseKubeconfig(const std::string& text, const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const std::exception&) {
    return Status::Error(path + ": not a valid kubeconfig (YAML syntax error)");
  }
  try {
    if (!root.IsMap()) return Status::Error(path + ": not a kubeconfig (expected a map)");
    std::string context_name = Field(root, "current-context");
    YAML::Node contexts = root["contexts"];
    if (context_name.empty()) {
      // kubectl needs current-context too, but a file with a single context is unambiguous.
      if (contexts && contexts.IsSequence() && contexts.size() == 1) {
        context_name = Field(contexts[0], "name");
      } else {
        return Status::Error(path + ": no current-context");
      }
    }
    YAML::Node context = Named(contexts, context_name, "context");
    if (!context || !context.IsMap()) {
      return Status::Error(path + ": current-context \"" + context_name + "\" is not in contexts");
    }
    std::string cluster_name = Field(context, "cluster");
    std::string user_name = Field(context, "user");
    YAML::Node cluster = Named(root["clusters"], cluster_name, "cluster");
    if (!cluster || !cluster.IsMap()) {
      return Status::Error(path + ": cluster \"" + cluster_name + "\" of context \"" +
                           context_name + "\" is not in clusters");
    }
    std::string base_dir = std::filesystem::path(path).parent_path().string();
    Credentials out;
    out.source = "kubeconfig " + path;
    out.context = context_name;
    out.server = StripTrailingSlash(Field(cluster, "server"));
    if (out.server.empty())
      return Status::Error(path + ": cluster \"" + cluster_name + "\" has no server");
    if (!out.server.starts_with("https://") && !out.server.starts_with("http://")) {
      return Status::Error(path + ": server \"" + out.server + "\" is not an http(s) URL");
    }
    out.ca_file = Resolve(Field(cluster, "certificate-authority"), base_dir);
    if (std::string data = Field(cluster, "certificate-authority-data"); !data.empty()) {
      std::optional<std::string> pem = DecodeBase64(data);
      if (!pem) return Status::Error(path + ": certificate-authority-data is not base64");
      out.ca_data = *pem;
    }
    std::string insecure = Field(cluster, "insecure-skip-tls-verify");
    out.insecure_skip_tls_verify = insecure == "true" || insecure == "True";

    YAML::Node user = Named(root["users"], user_name, "user");
    if (user && user.IsMap()) {
      if (user["exec"] || user["auth-provider"]) {
        return Status::Error(path + ": user \"" + user_name +
                             "\" authenticates through an exec or auth-provider plugin, which "
                             "the shim does not run; use a token or a client certificate");
      }
      out.token = Field(user, "token");
      out.token_file = Resolve(Field(user, "tokenFile"), base_dir);
      out.client_cert_file = Resolve(Field(user, "client-certificate"), base_dir);
      out.client_key_file = Resolve(Field(user, "client-key"), base_dir);
      for (auto [key, target] : {std::pair{"client-certificate-data", &out.client_cert_data},
                                 std::pair{"client-key-data", &out.client_key_data}}) {
        if (std::string data = Field(user, key); !data.empty()) {
          std::optional<std::string> pem = DecodeBase64(data);
          if (!pem) return Status::Error(path + ": " + key + " is not base64");
          *target = *pem;
        }
      }
    }
    bool has_cert = !out.client_cert_file.empty() || !out.client_cert_data.empty();
    bool has_key = !out.client_key_file.empty() || !out.client_key_data.empty();
    if (has_cert != has_key) {
      return Status::Error(path + ": user \"" + user_name +
                           "\" has a client certificate without its key or a key without its "
                           "certificate");
    }
    return out;
  } catch (const std::exception& e) {
    return Status::Error(path + ": not a valid kubeconfig: " + e.what());
  }
}

DiscoveryEnv DiscoveryEnv::System() {
  DiscoveryEnv env;
  env.getenv = [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
  return env;
}

Discovery DiscoverCredentials(const DiscoveryEnv& env) {
  Discovery out;
  auto get = [&](const std::string& name) -> std::string {
    if (!env.getenv) return "";
    return env.getenv(name).value_or("");
  };

  std::string host = get("KUBERNETES_SERVICE_HOST");
  std::string port = get("KUBERNETES_SERVICE_PORT");
  std::string token_file = env.service_account_dir + "/token";
  if (!host.empty() && !port.empty()) {
    std::string token_absent = Absent(token_file);
    if (token_absent.empty()) {
      Credentials c;
      c.source = "in-cluster service account";
      c.server =
          "https://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + port;
      c.token_file = token_file;
      c.ca_file = env.service_account_dir + "/ca.crt";
      out.tried.push_back("in a pod: service account " + env.service_account_dir + ": found");
      out.credentials = c;
      return out;
    }
    out.tried.push_back("in a pod: KUBERNETES_SERVICE_HOST is set but " + token_file + ": " +
                        token_absent);
  } else {
    out.tried.push_back("in a pod: no (KUBERNETES_SERVICE_HOST/_PORT not set)");
  }

  std::vector<std::pair<std::string, std::string>> files;  // label, path
  if (std::string list = get("KUBECONFIG"); !list.empty()) {
    // Several files separated by ':' are merged by kubectl; the shim takes the first that exists.
    std::string first;
    std::string skipped;  // "a: no such file; b: cannot check it: Permission denied"
    std::stringstream parts(list);
    for (std::string item; std::getline(parts, item, ':');) {
      if (item.empty()) continue;
      std::string absent = Absent(item);
      if (absent.empty()) {
        first = item;
        break;
      }
      skipped += (skipped.empty() ? "" : "; ") + item + ": " + absent;
    }
    if (first.empty()) {
      out.tried.push_back("$KUBECONFIG=" + list + ": none of its files can be used (" + skipped +
                          ")");
    } else {
      files.emplace_back("$KUBECONFIG", first);
    }
  } else {
    out.tried.push_back("$KUBECONFIG: not set");
  }
  for (const auto& path : env.node_kubeconfigs) files.emplace_back(path, path);
  if (std::string home = get("HOME"); !home.empty()) {
    files.emplace_back("~/.kube/config", home + "/.kube/config");
  }

  for (const auto& [label, path] : files) {
    if (std::string absent = Absent(path); !absent.empty()) {
      out.tried.push_back(path + ": " + absent);
      continue;
    }
    StatusOr<std::string> text = util::ReadWholeFile(path);
    if (!text.ok()) {
      out.tried.push_back(text.status().message());  // "cannot read <path>: <reason>"
      continue;
    }
    StatusOr<Credentials> parsed = ParseKubeconfig(*text, path);
    if (!parsed.ok()) {
      out.tried.push_back(parsed.status().message());
      continue;
    }
    out.tried.push_back(path + ": found");
    out.credentials = *parsed;
    return out;
  }
  return out;
}

}  // namespace shim::kube
