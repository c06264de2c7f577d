#include "config/loader.h"

#include <unistd.h>  // access
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <set>

#include "image/reference.h"
#include "util/file.h"

namespace shim::config {
namespace {

constexpr size_t kMaxSocketPath = 107;  // sun_path holds 108 bytes with the final NUL

std::string Quote(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string Join(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += separator;
    out += items[i];
  }
  return out;
}

std::string_view KindOf(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Null:
      return "nothing";
    default:
      return "a single value";
  }
}

bool IsDnsLabel(std::string_view text) {
  if (text.empty() || text.size() > 63) return false;
  auto ok = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!ok(text.front()) || !ok(text.back())) return false;
  return std::all_of(text.begin(), text.end(), [&](char c) { return ok(c) || c == '-'; });
}

// An entry of `registries[].namespaces`: a namespace name (a DNS label), or the start of one
// followed by a single '*' ("tenant-*"; "*" alone matches every namespace).
bool IsNamespacePattern(std::string_view text) {
  if (!text.ends_with('*')) return IsDnsLabel(text);
  std::string_view start = text.substr(0, text.size() - 1);
  if (start.empty()) return true;
  // Some label begins with `start`: it has a label's characters, begins with a letter or digit,
  // and leaves room for a last letter or digit.
  auto ok = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!ok(start.front()) || start.size() > 63 || (start.size() == 63 && !ok(start.back()))) {
    return false;
  }
  return std::all_of(start.begin(), start.end(), [&](char c) { return ok(c) || c == '-'; });
}

bool IsDnsSubdomain(std::string_view text) {
  if (text.empty() || text.size() > 253) return false;
  size_t start = 0;
  while (true) {
    size_t dot = text.find('.', start);
    if (!IsDnsLabel(text.substr(start, dot == std::string_view::npos ? dot : dot - start))) {
      return false;
    }
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

bool IsConfigMapKey(std::string_view text) {
  return !text.empty() && text.size() <= 253 && std::all_of(text.begin(), text.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

// The keys of one YAML map, in file order, each with its value.
using Entries = std::vector<std::pair<std::string, YAML::Node>>;

// Builds one Config from a YAML text and collects every problem on the way, so that a user
// sees all of them at once instead of fixing one per run.
class Parser {
 public:
  Parser(std::string source, ParseOptions options)
      : source_(std::move(source)), options_(options) {}

  LoadResult Parse(const std::string& text) {
    YAML::Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::ParserException& e) {
      std::string where;
      if (!e.mark.is_null()) {
        where = "line " + std::to_string(e.mark.line + 1) + ", column " +
                std::to_string(e.mark.column + 1) + ": ";
      }
      result_.errors.push_back(source_ + ": " + where + "YAML syntax error: " + e.msg);
      return std::move(result_);
    } catch (const std::exception& e) {
      result_.errors.push_back(source_ + ": cannot read YAML: " + e.what());
      return std::move(result_);
    }
    try {
      ParseRoot(root);
    } catch (const std::exception& e) {
      // Every type is checked before conversion; this is a last line of defence so that a
      // surprise inside yaml-cpp becomes an error message rather than a crash.
      result_.errors.push_back(source_ + ": invalid configuration: " + e.what());
    }
    if (result_.errors.empty()) {
      result_.config = std::make_shared<const Config>(std::move(config_));
    } else {
      result_.keys.clear();
      result_.has_primary = false;
      result_.registry_keys.clear();
      result_.registry_paths.clear();
    }
    return std::move(result_);
  }

 private:
  void Error(const std::string& key, const std::string& message) {
    result_.errors.push_back(source_ + ": " + (key.empty() ? "" : key + ": ") + message);
  }
  void Warn(const std::string& key, const std::string& message) {
    result_.warnings.push_back(source_ + ": " + (key.empty() ? "" : key + ": ") + message);
  }

  // The entries of a map, reporting unknown and repeated keys. `prefix` is the key path of the
  // map itself ("" at the top, "registries[0]", "configMap").
  Entries MapEntries(const YAML::Node& map, const std::string& prefix,
                     const std::vector<std::string>& known) {
    Entries entries;
    std::set<std::string> seen;
    for (const auto& item : map) {
      if (!item.first.IsScalar()) {
        Error(prefix, "a key is " + std::string(KindOf(item.first)) + ", expected a name");
        continue;
      }
      std::string key = item.first.Scalar();
      std::string path = prefix.empty() ? key : prefix + "." + key;
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        // The value is not shown: a misspelt `auth` would otherwise print a password.
        Warn(path, "unknown key, ignored (known keys: " + Join(known, ", ") + ")");
        continue;
      }
      if (!seen.insert(key).second) {
        Error(path, "appears more than once");
        continue;
      }
      entries.emplace_back(key, item.second);
    }
    return entries;
  }

  static const YAML::Node* Find(const Entries& entries, std::string_view key) {
    for (const auto& [name, node] : entries) {
      if (name == key) return &node;
    }
    return nullptr;
  }

  // A string value; an empty value (`key:`) reads as "". Reports a type error and returns
  // nullopt for lists and maps. The value is never quoted in the message.
  std::optional<std::string> String(const YAML::Node& node, const std::string& key) {
    if (node.IsNull()) return std::string();
    if (!node.IsScalar()) {
      Error(key, "expected a string, found " + std::string(KindOf(node)));
      return std::nullopt;
    }
    return node.Scalar();
  }

  std::optional<bool> Bool(const YAML::Node& node, const std::string& key) {
    bool value = false;
    if (node.IsNull()) return false;
    if (!node.IsScalar() || !YAML::convert<bool>::decode(node, value)) {
      Error(key, node.IsScalar() ? Quote(node.Scalar()) + " is not true or false"
                                 : "expected true or false, found " + std::string(KindOf(node)));
      return std::nullopt;
    }
    return value;
  }

  void PositiveDuration(const YAML::Node& node, const std::string& key,
                        std::chrono::milliseconds* out) {
    if (!node.IsScalar()) {
      Error(key,
            "expected a duration such as \"30s\" or \"15m\", found " + std::string(KindOf(node)));
      return;
    }
    std::chrono::milliseconds value{};
    if (!ParseDuration(node.Scalar(), &value)) {
      Error(key, Quote(node.Scalar()) +
                     " is not a duration (a number and a unit: \"500ms\", \"30s\", \"15m\", "
                     "\"1h30m\")");
      return;
    }
    if (value.count() <= 0) {
      Error(key, Quote(node.Scalar()) + " must be at least 1ms");
      return;
    }
    *out = value;
  }

  // `shim` and `cri`: absolute unix socket paths; "unix://" is accepted and dropped.
  void SocketPath(const YAML::Node& node, const std::string& key, std::string* out) {
    std::optional<std::string> value = String(node, key);
    if (!value) return;
    std::string path = *value;
    if (path.starts_with("unix://")) path = path.substr(7);
    if (path.empty() || path.front() != '/') {
      Error(key, Quote(*value) + " is not an absolute socket path (e.g. /run/x.sock)");
      return;
    }
    if (path.size() > kMaxSocketPath) {
      Error(key, Quote(*value) + " is longer than 107 characters, the limit of a unix socket path");
      return;
    }
    *out = path;
  }

  // "user:password", split at the first ':' so that passwords may hold colons; "" = anonymous.
  // The value is a secret: no message shows it.
  std::optional<Credentials> Auth(const YAML::Node& node, const std::string& key) {
    if (!node.IsNull() && !node.IsScalar()) {
      Error(key, "expected a string \"user:password\", found " + std::string(KindOf(node)));
      return std::nullopt;
    }
    std::string text = node.IsNull() ? "" : node.Scalar();
    if (text.empty()) return Credentials{};
    size_t colon = text.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
      Error(key,
            "value is not \"user:password\" (a user name, ':', then a non-empty password; "
            "\"\" for anonymous access)");
      return std::nullopt;
    }
    return Credentials{text.substr(0, colon), text.substr(colon + 1)};
  }

  // Fills address, scheme, host and path from a URL such as "registry.example.com",
  // "https://harbor.example.com:8443/proxy-cache" or "http://localhost:5000".
  bool Address(const YAML::Node& node, const std::string& key, Registry* registry) {
    std::optional<std::string> value = String(node, key);
    if (!value) return false;
    const std::string& text = *value;
    if (text.empty()) {
      Error(key, "must not be empty: a registry URL such as https://registry.company.com");
      return false;
    }
    std::string scheme = "https";
    std::string rest = text;
    if (size_t sep = text.find("://"); sep != std::string::npos) {
      scheme = text.substr(0, sep);
      std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      rest = text.substr(sep + 3);
      if (scheme != "https" && scheme != "http") {
        Error(key, Quote(text) + " is not an http(s) URL");
        return false;
      }
    }
    std::string hostport = rest.substr(0, rest.find('/'));
    if (hostport.find('@') != std::string::npos) {
      // user:password@host: the value holds a secret, so it is not shown.
      Error(key, "must not carry credentials (user:password@host): put them in auth");
      return false;
    }
    if (rest.find_first_of("?#") != std::string::npos) {
      Error(key, Quote(text) + " must not have a query or fragment");
      return false;
    }
    std::string path = hostport.size() < rest.size() ? rest.substr(hostport.size()) : "";
    while (!path.empty() && path.back() == '/') path.pop_back();

    if (Status status = image::ValidateDomain(hostport); !status.ok()) {
      Error(key, Quote(text) + " has no valid host: " + status.message());
      return false;
    }
    std::string lower = NormaliseHostPort(hostport, scheme);
    std::string host = image::CanonicalDomain(lower);
    if (!image::IsReferenceableDomain(host)) {
      Error(key, Quote(text) + ": host " + Quote(host) +
                     " cannot appear in image names (it would read as a Docker Hub "
                     "namespace): use a fully qualified name or add a port");
      return false;
    }
    // The path becomes part of image names, so each component follows the reference grammar.
    if (!path.empty()) {
      size_t start = 1;
      while (start <= path.size()) {
        size_t slash = path.find('/', start);
        std::string component =
            path.substr(start, slash == std::string::npos ? slash : slash - start);
        if (!image::IsValidPathComponent(component)) {
          Error(key, Quote(text) + ": path component " + Quote(component) +
                         " cannot appear in image names (lower-case letters and digits, "
                         "separated by '.', '_', '__' or '-')");
          return false;
        }
        if (slash == std::string::npos) break;
        start = slash + 1;
      }
    }
    registry->scheme = scheme;
    registry->host = host;
    registry->path = path;
    registry->address = scheme + "://" + lower + path;
    return true;
  }

  // A list of source prefixes (`registries[].prefixes`, `pin`, `allow`, `deny`) into `out`:
  // normalised (image::NormalisePrefix), each once, in the order given.
  void Prefixes(const YAML::Node& node, const std::string& key, std::vector<std::string>* out) {
    if (node.IsNull()) return;
    if (!node.IsSequence()) {
      Error(key,
            "expected a list of prefixes such as [\"docker.io/myteam/\", \"quay.io/\"], "
            "found " +
                std::string(KindOf(node)));
      return;
    }
    for (size_t i = 0; i < node.size(); ++i) {
      std::string item_key = key + "[" + std::to_string(i) + "]";
      if (!node[i].IsScalar()) {
        Error(item_key, "expected a string, found " + std::string(KindOf(node[i])));
        continue;
      }
      StatusOr<std::string> prefix = image::NormalisePrefix(node[i].Scalar());
      if (!prefix.ok()) {
        Error(item_key, prefix.status().message());
        continue;
      }
      if (std::find(out->begin(), out->end(), *prefix) == out->end()) out->push_back(*prefix);
    }
  }

  // `registries[].namespaces` into `out`: namespace names or "prefix*" patterns, each once, in
  // the order given. Case is not folded: Kubernetes namespace names are lower case.
  void Namespaces(const YAML::Node& node, const std::string& key, std::vector<std::string>* out) {
    if (node.IsNull()) return;
    if (!node.IsSequence()) {
      Error(key, "expected a list of namespaces such as [team-b, \"tenant-*\"], found " +
                     std::string(KindOf(node)));
      return;
    }
    for (size_t i = 0; i < node.size(); ++i) {
      std::string item_key = key + "[" + std::to_string(i) + "]";
      if (!node[i].IsScalar()) {
        Error(item_key, "expected a string, found " + std::string(KindOf(node[i])));
        continue;
      }
      const std::string& pattern = node[i].Scalar();
      if (!IsNamespacePattern(pattern)) {
        Error(item_key, Quote(pattern) +
                            " is not a namespace name or a namespace prefix followed by '*' "
                            "(lower-case letters, digits and '-', starting and ending with a "
                            "letter or digit, at most 63 characters: team-b, \"tenant-*\", "
                            "\"*\")");
        continue;
      }
      if (std::find(out->begin(), out->end(), pattern) == out->end()) out->push_back(pattern);
    }
  }

  // `prePull`: image references, validated and normalised (image::Reference::String()), each
  // once, in the order given. Image ids are refused: a pull needs a name.
  void PrePull(const YAML::Node& node) {
    if (node.IsNull()) return;
    if (!node.IsSequence()) {
      Error("prePull",
            "expected a list of image references such as [registry.k8s.io/pause:3.9], found " +
                std::string(KindOf(node)));
      return;
    }
    for (size_t i = 0; i < node.size(); ++i) {
      std::string item_key = "prePull[" + std::to_string(i) + "]";
      if (!node[i].IsScalar()) {
        Error(item_key, "expected a string, found " + std::string(KindOf(node[i])));
        continue;
      }
      const std::string& text = node[i].Scalar();
      if (image::LooksLikeImageId(text)) {
        Error(item_key, Quote(text) +
                            " is an image id, not an image reference: give the image's name "
                            "(e.g. registry.k8s.io/pause:3.9 or nginx@sha256:<64 hex>)");
        continue;
      }
      StatusOr<image::Reference> reference = image::ParseReference(text);
      if (!reference.ok()) {
        // The reason alone: the message of ParseReference repeats the value first.
        std::string reason = reference.status().message();
        std::string repeated = "invalid image reference \"" + text + "\": ";
        if (reason.starts_with(repeated)) reason.erase(0, repeated.size());
        Error(item_key, Quote(text) + " is not an image reference: " + reason);
        continue;
      }
      std::string normalised = reference->String();
      if (std::find(config_.pre_pull.begin(), config_.pre_pull.end(), normalised) ==
          config_.pre_pull.end()) {
        config_.pre_pull.push_back(std::move(normalised));
      }
    }
  }

  std::optional<Registry> RegistryEntry(const YAML::Node& node, const std::string& key,
                                        std::set<std::string>* keys_given) {
    if (!node.IsMap()) {
      Error(key, "expected a map with address and auth, found " + std::string(KindOf(node)));
      return std::nullopt;
    }
    Entries entries = MapEntries(
        node, key, {"address", "auth", "prefixes", "namespaces", "ca", "insecureSkipVerify"});
    for (const auto& [name, value] : entries) keys_given->insert(name);
    Registry registry;
    bool ok = true;
    if (const YAML::Node* address = Find(entries, "address")) {
      ok = Address(*address, key + ".address", &registry) && ok;
    } else {
      Error(key + ".address", "missing: every registry needs an address");
      ok = false;
    }
    if (const YAML::Node* auth = Find(entries, "auth")) {
      std::optional<Credentials> credentials = Auth(*auth, key + ".auth");
      if (credentials) registry.auth = *credentials;
      ok = credentials.has_value() && ok;
    }
    size_t errors = result_.errors.size();
    if (const YAML::Node* prefixes = Find(entries, "prefixes")) {
      Prefixes(*prefixes, key + ".prefixes", &registry.prefixes);
    }
    if (const YAML::Node* namespaces = Find(entries, "namespaces")) {
      Namespaces(*namespaces, key + ".namespaces", &registry.namespaces);
    }
    if (const YAML::Node* ca = Find(entries, "ca")) {
      if (std::optional<std::string> value = String(*ca, key + ".ca")) {
        registry.ca_file = *value;
        if (!value->empty() && ::access(value->c_str(), R_OK) != 0) {
          // Only the health probe uses it: a warning, so a reload elsewhere is not rejected.
          Warn(key + ".ca", Quote(*value) + ": cannot read: " + std::strerror(errno));
        }
      }
    }
    if (const YAML::Node* insecure = Find(entries, "insecureSkipVerify")) {
      if (std::optional<bool> value = Bool(*insecure, key + ".insecureSkipVerify")) {
        registry.insecure_skip_verify = *value;
      }
    }
    if (!ok || result_.errors.size() != errors) return std::nullopt;
    return registry;
  }

  void ConfigMap(const YAML::Node& node) {
    if (node.IsNull()) return;
    if (!node.IsMap()) {
      Error("configMap",
            "expected a map (enabled, namespace, name, key), found " + std::string(KindOf(node)));
      return;
    }
    Entries entries = MapEntries(node, "configMap", {"enabled", "namespace", "name", "key"});
    KubeSync& kube = config_.kube;
    if (const YAML::Node* enabled = Find(entries, "enabled")) {
      if (std::optional<bool> value = Bool(*enabled, "configMap.enabled")) kube.enabled = *value;
    }
    if (const YAML::Node* ns = Find(entries, "namespace")) {
      if (std::optional<std::string> value = String(*ns, "configMap.namespace")) {
        if (IsDnsLabel(*value)) {
          kube.namespace_ = *value;
        } else {
          Error("configMap.namespace",
                Quote(*value) + " is not a namespace name (lower-case letters, digits and '-')");
        }
      }
    }
    if (const YAML::Node* name = Find(entries, "name")) {
      if (std::optional<std::string> value = String(*name, "configMap.name")) {
        if (IsDnsSubdomain(*value)) {
          kube.name = *value;
        } else {
          Error("configMap.name", Quote(*value) +
                                      " is not a ConfigMap name (lower-case letters, digits, '-' "
                                      "and '.')");
        }
      }
    }
    if (const YAML::Node* data_key = Find(entries, "key")) {
      if (std::optional<std::string> value = String(*data_key, "configMap.key")) {
        if (IsConfigMapKey(*value)) {
          kube.key = *value;
        } else {
          Error("configMap.key",
                Quote(*value) + " is not a ConfigMap data key (letters, digits, '-', '_', '.')");
        }
      }
    }
  }

  void MetricsAddress(const YAML::Node& node) {
    std::optional<std::string> value = String(node, "metricsAddress");
    if (!value) return;
    if (value->empty()) {
      config_.metrics.address.clear();
      return;
    }
    size_t colon = value->rfind(':');
    std::string host = colon == std::string::npos ? "" : value->substr(0, colon);
    std::string port = colon == std::string::npos ? "" : value->substr(colon + 1);
    bool port_ok = !port.empty() && port.size() <= 5 &&
                   std::all_of(port.begin(), port.end(), ::isdigit) && std::stoi(port) >= 1 &&
                   std::stoi(port) <= 65535;
    bool host_ok = host.empty() || image::ValidateDomain(host).ok();
    if (!port_ok || !host_ok) {
      Error("metricsAddress", Quote(*value) +
                                  " is not host:port (e.g. \"127.0.0.1:10258\"; \"\" turns "
                                  "metrics off)");
      return;
    }
    config_.metrics.address = *value;
  }

  void ParseRoot(const YAML::Node& root) {
    if (!root.IsNull() && !root.IsMap()) {
      Error("", "expected a map of settings at the top level, found " + std::string(KindOf(root)));
      return;
    }
    Entries entries;
    if (root.IsMap()) {
      entries = MapEntries(root, "",
                           {"shim", "cri", "address", "auth", "registries", "force", "debug",
                            "timeout", "reloadInterval", "fallbackToOrigin", "imageNames", "pin",
                            "allow", "deny", "prePull", "configMap", "metricsAddress", "stateDir"});
    }
    for (const auto& [name, value] : entries) result_.keys.insert(name);

    if (const YAML::Node* node = Find(entries, "shim"))
      SocketPath(*node, "shim", &config_.shim_socket);
    if (const YAML::Node* node = Find(entries, "cri"))
      SocketPath(*node, "cri", &config_.cri_socket);

    // The primary registry: `address` and `auth` at the top level.
    std::vector<std::pair<std::string, Registry>> registries;  // key path, registry
    std::vector<std::set<std::string>> keys_given;             // beside `registries`
    Registry primary;
    bool primary_ok = false;
    if (const YAML::Node* node = Find(entries, "address")) {
      primary_ok = Address(*node, "address", &primary);
    } else if (Find(entries, "auth") && options_.partial) {
      Error("auth", "is the primary registry's credentials: give `address` beside it");
    } else if (!options_.partial) {
      Error("address",
            "missing: the primary registry is required (e.g. https://registry.company.com)");
    }
    std::set<std::string> primary_keys = {"address"};
    if (const YAML::Node* node = Find(entries, "auth")) {
      std::optional<Credentials> credentials = Auth(*node, "auth");
      if (credentials) primary.auth = *credentials;
      primary_ok = primary_ok && credentials.has_value();
      primary_keys.insert("auth");
    }
    if (primary_ok) {
      registries.emplace_back("address", std::move(primary));
      keys_given.push_back(std::move(primary_keys));
      result_.has_primary = true;
    }

    if (const YAML::Node* node = Find(entries, "registries"); node && !node->IsNull()) {
      if (!node->IsSequence()) {
        Error("registries", "expected a list of registries (- address: ...), found " +
                                std::string(KindOf(*node)));
      } else {
        for (size_t i = 0; i < node->size(); ++i) {
          std::string key = "registries[" + std::to_string(i) + "]";
          std::set<std::string> given;
          if (std::optional<Registry> registry = RegistryEntry((*node)[i], key, &given)) {
            registries.emplace_back(key, std::move(*registry));
            keys_given.push_back(std::move(given));
          }
        }
      }
    }
    // Two entries for one place would make "already on a configured registry" ambiguous.
    // One host may carry several paths (Harbor proxy-cache projects).
    for (size_t i = 0; i < registries.size(); ++i) {
      for (size_t j = 0; j < i; ++j) {
        const Registry& a = registries[i].second;
        const Registry& b = registries[j].second;
        if (a.host == b.host && a.path == b.path) {
          Error(registries[i].first + ".address",
                Quote(a.address) + " is the same registry as " + registries[j].first + " (" +
                    Quote(b.address) + "): list each registry once");
        }
      }
    }
    for (auto& [key, registry] : registries) {
      result_.registry_paths.push_back(key);
      config_.registries.push_back(std::move(registry));
    }
    result_.registry_keys = std::move(keys_given);

    if (const YAML::Node* node = Find(entries, "force")) {
      if (std::optional<bool> value = Bool(*node, "force")) config_.force = *value;
    }
    if (const YAML::Node* node = Find(entries, "debug")) {
      if (std::optional<bool> value = Bool(*node, "debug")) config_.debug = *value;
    }
    if (const YAML::Node* node = Find(entries, "fallbackToOrigin")) {
      if (std::optional<bool> value = Bool(*node, "fallbackToOrigin")) {
        config_.fallback_to_origin = *value;
      }
    }
    if (const YAML::Node* node = Find(entries, "imageNames")) ImageNamesKey(*node);
    if (const YAML::Node* node = Find(entries, "pin")) Prefixes(*node, "pin", &config_.pin);
    if (const YAML::Node* node = Find(entries, "allow")) Prefixes(*node, "allow", &config_.allow);
    if (const YAML::Node* node = Find(entries, "deny")) Prefixes(*node, "deny", &config_.deny);
    if (const YAML::Node* node = Find(entries, "prePull")) PrePull(*node);
    if (const YAML::Node* node = Find(entries, "timeout")) {
      PositiveDuration(*node, "timeout", &config_.timeout);
    }
    if (const YAML::Node* node = Find(entries, "reloadInterval")) {
      PositiveDuration(*node, "reloadInterval", &config_.reload_interval);
    }
    if (const YAML::Node* node = Find(entries, "configMap")) ConfigMap(*node);
    if (const YAML::Node* node = Find(entries, "metricsAddress")) MetricsAddress(*node);
    if (const YAML::Node* node = Find(entries, "stateDir")) StateDir(*node);
  }

  // `imageNames`: "requested" or "registry", as written (no case folding, like Kubernetes'
  // enumerations); `imageNames:` with no value is "", which is neither.
  void ImageNamesKey(const YAML::Node& node) {
    if (!node.IsNull() && !node.IsScalar()) {
      Error("imageNames", "expected requested or registry, found " + std::string(KindOf(node)));
      return;
    }
    std::string value = node.IsNull() ? "" : node.Scalar();
    if (value == ImageNamesName(ImageNames::kRequested)) {
      config_.image_names = ImageNames::kRequested;
    } else if (value == ImageNamesName(ImageNames::kRegistry)) {
      config_.image_names = ImageNames::kRegistry;
    } else {
      Error("imageNames", Quote(value) +
                              " is not requested or registry (the name the runtime keeps a "
                              "pulled image under: the one kubelet asked for, or the serving "
                              "registry's)");
    }
  }

  // `stateDir`: an absolute directory for what the shim keeps between restarts; "" = keep
  // nothing.
  void StateDir(const YAML::Node& node) {
    std::optional<std::string> value = String(node, "stateDir");
    if (!value) return;
    if (!value->empty() && value->front() != '/') {
      Error("stateDir", Quote(*value) +
                            " is not an absolute directory (e.g. /var/lib/image-cri-shim; \"\" "
                            "keeps nothing between restarts)");
      return;
    }
    std::string dir = *value;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    config_.state_dir = dir;
  }

  std::string source_;
  ParseOptions options_;
  Config config_;
  LoadResult result_;
};

}  // namespace

LoadResult ParseConfig(const std::string& yaml_text, const std::string& source,
                       ParseOptions options) {
  return Parser(source, options).Parse(yaml_text);
}

LoadResult LoadConfigFile(const std::string& path) {
  StatusOr<std::string> text = util::ReadWholeFile(path, 16 << 20, util::FileRule::kRegularFile);
  if (!text.ok()) {
    LoadResult result;
    result.errors.push_back(text.status().message() + " (choose another with --file)");
    return result;
  }
  return ParseConfig(*text, path);
}

std::string NormaliseHostPort(std::string_view hostport, std::string_view scheme) {
  std::string host(hostport);
  std::transform(host.begin(), host.end(), host.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  std::string_view default_port = scheme == "http" ? ":80" : ":443";
  if (host.ends_with(default_port)) host.resize(host.size() - default_port.size());
  return host;
}

bool ParseDuration(const std::string& text, std::chrono::milliseconds* out) {
  // Go's time.ParseDuration: [-+]?([0-9]*(\.[0-9]*)?[a-z]+)+, or "0".
  std::string_view s = text;
  bool negative = false;
  if (!s.empty() && (s.front() == '-' || s.front() == '+')) {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }
  if (s == "0") {
    *out = std::chrono::milliseconds(0);
    return true;
  }
  if (s.empty()) return false;
  static const std::pair<std::string_view, long double> kUnits[] = {
      {"ns", 1e-6L}, {"us", 1e-3L},  {"\xC2\xB5s", 1e-3L}, {"\xCE\xBCs", 1e-3L},
      {"ms", 1.0L},  {"s", 1000.0L}, {"m", 60000.0L},      {"h", 3600000.0L}};
  long double total_ms = 0;
  while (!s.empty()) {
    size_t i = 0;
    size_t int_digits = 0;
    size_t frac_digits = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++int_digits;
    if (i < s.size() && s[i] == '.') {
      ++i;
      while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++frac_digits;
    }
    if (int_digits + frac_digits == 0) return false;
    long double number = std::strtold(std::string(s.substr(0, i)).c_str(), nullptr);
    s.remove_prefix(i);
    size_t unit_length = 0;
    while (unit_length < s.size() && !std::isdigit(static_cast<unsigned char>(s[unit_length])) &&
           s[unit_length] != '.') {
      ++unit_length;
    }
    std::string_view unit = s.substr(0, unit_length);
    auto it = std::find_if(std::begin(kUnits), std::end(kUnits),
                           [&](const auto& u) { return u.first == unit; });
    if (it == std::end(kUnits)) return false;
    total_ms += number * it->second;
    s.remove_prefix(unit_length);
  }
  // Go's limit is about 290 years; beyond it the value is meaningless anyway.
  if (total_ms > 9.2e15L) return false;
  auto ms = static_cast<long long>(std::floor(total_ms + 1e-9L));
  *out = std::chrono::milliseconds(negative ? -ms : ms);
  return true;
}

std::string FormatDuration(std::chrono::milliseconds duration) {
  long long ms = duration.count();
  if (ms == 0) return "0s";
  std::string out;
  if (ms < 0) {
    out = "-";
    ms = -ms;
  }
  const std::pair<long long, const char*> kParts[] = {
      {3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}};
  for (const auto& [size, unit] : kParts) {
    if (ms >= size) {
      out += std::to_string(ms / size) + unit;
      ms %= size;
    }
  }
  return out;
}

std::string_view ImageNamesName(ImageNames names) {
  switch (names) {
    case ImageNames::kRequested:
      return "requested";
    case ImageNames::kRegistry:
      return "registry";
  }
  std::abort();  // every ImageNames is named above: a programming error otherwise
}

std::string ToMaskedYaml(const Config& config, const Origins* origins) {
  YAML::Emitter out;
  // Each value, with a comment naming where it came from when origins are asked for.
  auto source = [&](const std::string& path) {
    if (origins == nullptr) return;
    auto it = origins->find(path);
    out << YAML::Comment(it == origins->end() ? "default" : it->second);
  };
  auto value = [&](const std::string& key, const std::string& path, const auto& v) {
    out << YAML::Key << key << YAML::Value << v;
    source(path);
  };
  auto list = [&](const std::string& key, const std::string& path,
                  const std::vector<std::string>& items) {
    out << YAML::Key << key << YAML::Value << YAML::Flow << items;
    source(path);
  };
  out << YAML::BeginMap;
  value("shim", "shim", config.shim_socket);
  value("cri", "cri", config.cri_socket);
  auto registry = [&](const Registry& r, const std::string& prefix, bool primary) {
    value("address", prefix + "address", r.address);
    value("auth", prefix + "auth", Masked(r.auth));
    // The primary has no more keys in the file; a promoted backup may bring them.
    if (primary && r.prefixes.empty() && r.namespaces.empty() && r.ca_file.empty() &&
        !r.insecure_skip_verify) {
      return;
    }
    list("prefixes", prefix + "prefixes", r.prefixes);
    list("namespaces", prefix + "namespaces", r.namespaces);
    value("ca", prefix + "ca", r.ca_file);
    value("insecureSkipVerify", prefix + "insecureSkipVerify", r.insecure_skip_verify);
  };
  if (!config.registries.empty()) registry(config.registries[0], "", true);
  out << YAML::Key << "registries" << YAML::Value << YAML::BeginSeq;
  for (size_t i = 1; i < config.registries.size(); ++i) {
    out << YAML::BeginMap;
    registry(config.registries[i], "registries[" + std::to_string(i - 1) + "].", false);
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
  value("force", "force", config.force);
  value("debug", "debug", config.debug);
  value("timeout", "timeout", FormatDuration(config.timeout));
  value("reloadInterval", "reloadInterval", FormatDuration(config.reload_interval));
  value("fallbackToOrigin", "fallbackToOrigin", config.fallback_to_origin);
  value("imageNames", "imageNames", std::string(ImageNamesName(config.image_names)));
  list("pin", "pin", config.pin);
  list("allow", "allow", config.allow);
  list("deny", "deny", config.deny);
  list("prePull", "prePull", config.pre_pull);
  out << YAML::Key << "configMap" << YAML::Value << YAML::BeginMap;
  value("enabled", "configMap.enabled", config.kube.enabled);
  value("namespace", "configMap.namespace", config.kube.namespace_);
  value("name", "configMap.name", config.kube.name);
  value("key", "configMap.key", config.kube.key);
  out << YAML::EndMap;
  value("metricsAddress", "metricsAddress", config.metrics.address);
  value("stateDir", "stateDir", config.state_dir);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace shim::config
