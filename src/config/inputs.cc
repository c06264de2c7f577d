#include "config/inputs.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <functional>

#include "config/configmap.h"

namespace shim::config {
namespace {

// The keys a payload may set that map onto one member of Config each; the payload's value
// replaces the file's.
struct ScalarKey {
  const char* key;
  std::function<void(Config& into, const Config& from)> copy;
};
const std::vector<ScalarKey>& ScalarKeys() {
  static const std::vector<ScalarKey> keys = {
      {"force", [](Config& d, const Config& s) { d.force = s.force; }},
      {"debug", [](Config& d, const Config& s) { d.debug = s.debug; }},
      {"timeout", [](Config& d, const Config& s) { d.timeout = s.timeout; }},
      {"reloadInterval", [](Config& d, const Config& s) { d.reload_interval = s.reload_interval; }},
      {"fallbackToOrigin",
       [](Config& d, const Config& s) { d.fallback_to_origin = s.fallback_to_origin; }},
      {"imageNames", [](Config& d, const Config& s) { d.image_names = s.image_names; }},
      // The payload's list replaces the file's whole, like `registries`: `pin: []` empties it.
      {"pin", [](Config& d, const Config& s) { d.pin = s.pin; }},
      {"allow", [](Config& d, const Config& s) { d.allow = s.allow; }},
      {"deny", [](Config& d, const Config& s) { d.deny = s.deny; }},
      {"prePull", [](Config& d, const Config& s) { d.pre_pull = s.pre_pull; }},
  };
  return keys;
}

// Keys that only the local file sets, as ToMaskedYaml prints them.
const std::vector<std::pair<const char*, std::vector<const char*>>>& NodeKeys() {
  static const std::vector<std::pair<const char*, std::vector<const char*>>> keys = {
      {"shim", {"shim"}},
      {"cri", {"cri"}},
      {"metricsAddress", {"metricsAddress"}},
      {"stateDir", {"stateDir"}},
      {"configMap",
       {"configMap.enabled", "configMap.namespace", "configMap.name", "configMap.key"}},
  };
  return keys;
}

const char* const kRegistryFields[] = {"address",    "auth", "prefixes",
                                       "namespaces", "ca",   "insecureSkipVerify"};

void CopyRegistryField(const std::string& field, Registry& into, const Registry& from) {
  if (field == "address") {
    into.address = from.address;
    into.scheme = from.scheme;
    into.host = from.host;
    into.path = from.path;
  } else if (field == "auth") {
    into.auth = from.auth;
  } else if (field == "prefixes") {
    into.prefixes = from.prefixes;
  } else if (field == "namespaces") {
    into.namespaces = from.namespaces;
  } else if (field == "ca") {
    into.ca_file = from.ca_file;
  } else if (field == "insecureSkipVerify") {
    into.insecure_skip_verify = from.insecure_skip_verify;
  }
}

// One registry entry of one source.
struct Entry {
  const Registry* registry;
  const std::set<std::string>* keys;
  std::string path;  // "address" (the primary) or "registries[i]"
  bool primary;
};

struct Listing {
  std::vector<Entry> entries;  // the primary first, when there is one
  bool has_primary = false;
};

Listing ListOf(const LoadResult& loaded) {
  Listing out;
  out.has_primary = loaded.has_primary;
  for (size_t i = 0; i < loaded.config->registries.size(); ++i) {
    out.entries.push_back(Entry{&loaded.config->registries[i], &loaded.registry_keys[i],
                                loaded.registry_paths[i], loaded.has_primary && i == 0});
  }
  return out;
}

bool SameRegistry(const Registry& a, const Registry& b) {
  return a.host == b.host && a.path == b.path;
}

const Entry* FindIn(const Listing& listing, const Registry& registry) {
  for (const Entry& e : listing.entries) {
    if (SameRegistry(*e.registry, registry)) return &e;
  }
  return nullptr;
}

// The key path ToMaskedYaml prints for `field` of the merged registry at `index`.
std::string PrintedPath(size_t index, const std::string& field) {
  if (index == 0) return field;
  return "registries[" + std::to_string(index - 1) + "]." + field;
}

struct PayloadSide {
  const LoadResult* loaded = nullptr;  // the payload in the file's keys
  const std::map<std::string, std::string>* secret_auths = nullptr;
  bool address_borrowed = false;  // its primary address is the file's (an `auth` alone)
};

// Merges the parsed payload (if any) into the parsed local file. REQUIRES: both parsed whole.
MergeResult Merge(const LoadResult& local, const std::string& local_source,
                  const PayloadSide& payload, const std::string& payload_source) {
  MergeResult out;
  Config merged = *local.config;
  Origins& origins = out.origins;
  for (const auto& [key, printed] : NodeKeys()) {
    if (local.keys.count(key) == 0) continue;
    for (const char* path : printed) origins[path] = "file";
  }
  for (const ScalarKey& k : ScalarKeys()) {
    if (payload.loaded != nullptr && payload.loaded->keys.count(k.key) != 0) {
      k.copy(merged, *payload.loaded->config);
      origins[k.key] = "ConfigMap";
    } else if (local.keys.count(k.key) != 0) {
      origins[k.key] = "file";
    }
  }

  Listing file = ListOf(local);
  Listing map;
  if (payload.loaded != nullptr) map = ListOf(*payload.loaded);
  // The order: the primary, then the rest, each from the source that sets it.
  std::vector<const Entry*> order;
  const Listing& primary_from = map.has_primary ? map : file;
  if (primary_from.has_primary) order.push_back(&primary_from.entries[0]);
  bool map_lists = payload.loaded != nullptr && payload.loaded->keys.count("registries") != 0;
  const Listing& rest_from = map_lists ? map : file;
  for (const Entry& e : rest_from.entries) {
    if (!e.primary) order.push_back(&e);
  }

  merged.registries.clear();
  for (const Entry* chosen : order) {
    const Registry& id = *chosen->registry;
    bool seen = std::any_of(merged.registries.begin(), merged.registries.end(),
                            [&](const Registry& r) { return SameRegistry(r, id); });
    if (seen) continue;  // once, at its first position
    const Entry* from_file = FindIn(file, id);
    const Entry* from_map = payload.loaded != nullptr ? FindIn(map, id) : nullptr;
    Registry registry = from_file != nullptr ? *from_file->registry : *from_map->registry;
    size_t index = merged.registries.size();
    for (const char* field : kRegistryFields) {
      std::string path = PrintedPath(index, field);
      bool in_map =
          from_map != nullptr && from_map->keys->count(field) != 0 &&
          !(payload.address_borrowed && from_map->primary && std::string(field) == "address");
      if (in_map) {
        CopyRegistryField(field, registry, *from_map->registry);
        std::string auth_path = from_map->primary ? "auth" : from_map->path + ".auth";
        auto secret = payload.secret_auths->find(auth_path);
        origins[path] = std::string(field) == "auth" && secret != payload.secret_auths->end()
                            ? "ConfigMap, " + secret->second
                            : "ConfigMap";
      } else if (from_file != nullptr && from_file->keys->count(field) != 0) {
        origins[path] = "file";
      }
    }
    merged.registries.push_back(std::move(registry));
  }
  if (!map.has_primary && !file.has_primary) {
    out.errors.push_back(local_source + ": address: missing" +
                         (payload.loaded != nullptr ? " here and in " + payload_source : "") +
                         ": the primary registry is required (e.g. "
                         "https://registry.company.com)");
    return out;
  }
  out.loaded.config = std::make_shared<const Config>(std::move(merged));
  return out;
}

// The payload in the file's keys, parsed; an `auth` without `address` borrows the file's
// primary address, so that a ConfigMap can rotate the primary's password alone.
LoadResult ParsePayload(const ConvertedPayload& converted, const LoadResult& local,
                        const std::string& source, bool* borrowed) {
  std::string text = converted.text;
  try {
    YAML::Node root = YAML::Load(text);
    if (root.IsMap() && root["auth"] && !root["address"] && local.ok() && local.has_primary) {
      root["address"] = local.config->registries[0].address;
      YAML::Emitter emitter;
      emitter << root;
      text = emitter.c_str();
      *borrowed = true;
    }
  } catch (const std::exception&) {
    // ParseConfig below reports what is wrong with it.
  }
  return ParseConfig(text, source, ParseOptions{.partial = true});
}

MergeResult MergeConverted(const std::string& local_text, const std::string& local_source,
                           const ConvertedPayload& converted, const std::string& source) {
  MergeResult out;
  LoadResult local = ParseConfig(local_text, local_source, ParseOptions{.partial = true});
  out.warnings = local.warnings;
  out.errors = local.errors;
  out.warnings.insert(out.warnings.end(), converted.warnings.begin(), converted.warnings.end());
  out.errors.insert(out.errors.end(), converted.errors.begin(), converted.errors.end());
  if (!converted.errors.empty()) return out;
  bool borrowed = false;
  LoadResult remote = ParsePayload(converted, local, source, &borrowed);
  out.warnings.insert(out.warnings.end(), remote.warnings.begin(), remote.warnings.end());
  out.errors.insert(out.errors.end(), remote.errors.begin(), remote.errors.end());
  if (!out.errors.empty()) return out;
  MergeResult merged =
      Merge(local, local_source, PayloadSide{&remote, &converted.secret_auths, borrowed}, source);
  merged.warnings.insert(merged.warnings.begin(), out.warnings.begin(), out.warnings.end());
  return merged;
}

}  // namespace

const DockerAuth* DockerConfig::Find(std::string_view host) const {
  if (host.empty()) return nullptr;
  const DockerAuth* normalised = nullptr;
  for (const auto& [key, auth] : auths) {
    std::string lower = key;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower == host) return &auth;
    if (normalised == nullptr && RegistryHostKey(key) == host) normalised = &auth;
  }
  return normalised;
}

SecretAuth SecretAuthFor(const DockerConfig& config, const std::string& name,
                         std::string_view host) {
  SecretAuth out;
  std::string full = "Secret " + name;
  if (!config.ok()) {
    out.problem = config.error;
  } else if (const DockerAuth* auth = config.Find(host); !auth) {
    out.problem = full + " has no entry for " + std::string(host) + " in .dockerconfigjson";
  } else if (!auth->ok()) {
    out.problem = full + ": the entry for " + std::string(host) + " " + auth->error;
  } else {
    out.username = auth->username;
    out.password = auth->password;
  }
  return out;
}

ConfigMapInput ConfigMapInput::For(const KubeSync& settings) {
  return ConfigMapInput{
      .namespace_ = settings.namespace_, .name = settings.name, .key = settings.key};
}

bool ConfigMapInput::IsFor(const KubeSync& settings) const {
  return namespace_ == settings.namespace_ && name == settings.name && key == settings.key;
}

std::string ConfigMapInput::Describe() const {
  return "ConfigMap " + namespace_ + "/" + name + " key " + key;
}

MergeResult MergeConfigMap(const std::string& local_text, const std::string& local_source,
                           const std::string& payload, const std::string& source,
                           const SecretLookup& secrets, const std::string& secret_namespace) {
  ConvertedPayload converted = ConvertPayload(payload, source, secrets, secret_namespace);
  return MergeConverted(local_text, local_source, converted, source);
}

Resolved Resolve(const ConfigInputs& inputs) {
  Resolved out;
  if (!inputs.file_error.empty()) {
    out.errors.push_back(inputs.file_error);
    return out;
  }
  MergeResult merged;
  if (!inputs.configmap) {
    LoadResult local = ParseConfig(inputs.file_text, inputs.file_path);
    merged.errors = local.errors;
    merged.warnings = local.warnings;
    if (local.ok()) {
      MergeResult m = Merge(local, inputs.file_path, PayloadSide{}, "");
      merged.errors = std::move(m.errors);
      merged.loaded = std::move(m.loaded);
      merged.origins = std::move(m.origins);
    }
  } else {
    const ConfigMapInput& map = *inputs.configmap;
    SecretLookup lookup = [&map](const std::string& name, const std::string& host) {
      std::string full = map.namespace_ + "/" + name;
      auto it = map.secrets.find(name);
      if (it == map.secrets.end()) {
        SecretAuth missing;
        missing.problem = "Secret " + full + " has not been read";
        return missing;
      }
      return SecretAuthFor(it->second, full, host);
    };
    merged = MergeConfigMap(inputs.file_text, inputs.file_path, map.payload, map.Describe(), lookup,
                            map.namespace_);
  }
  out.errors = std::move(merged.errors);
  out.warnings = std::move(merged.warnings);
  out.origins = std::move(merged.origins);
  if (out.errors.empty()) out.config = merged.loaded.config;
  return out;
}

}  // namespace shim::config
