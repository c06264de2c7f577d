#include "config/state_dir.h"

#include <sys/stat.h>
#include <unistd.h>  // unlink
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstring>

#include "config/writer.h"
#include "util/file.h"

namespace shim::config {
namespace {

// Bumped when the layout changes; a file of another version is ignored, not misread.
constexpr int kStateVersion = 1;

std::string PathIn(const std::string& dir) {
  return dir + "/" + kConfigMapStateFile;
}

std::string Text(const YAML::Node& node) {
  return node && node.IsScalar() ? node.Scalar() : "";
}

}  // namespace

Status SaveConfigMapState(const std::string& state_dir, const ConfigMapInput& input) {
  if (Status s = EnsurePrivateDirectory(state_dir); !s.ok()) return s;
  YAML::Emitter out;
  out << YAML::Comment(
      "image-cri-shim: the last ConfigMap payload applied and the Secrets it named, served "
      "after a restart until the API server answers. Written by the shim; do not edit.");
  out << YAML::BeginMap;
  out << YAML::Key << "version" << YAML::Value << kStateVersion;
  out << YAML::Key << "namespace" << YAML::Value << input.namespace_;
  out << YAML::Key << "name" << YAML::Value << input.name;
  out << YAML::Key << "key" << YAML::Value << input.key;
  out << YAML::Key << "payload" << YAML::Value << YAML::DoubleQuoted << input.payload;
  out << YAML::Key << "secrets" << YAML::Value << YAML::BeginMap;
  for (const auto& [name, secret] : input.secrets) {
    out << YAML::Key << name << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "error" << YAML::Value << secret.error;
    out << YAML::Key << "auths" << YAML::Value << YAML::BeginSeq;
    for (const auto& [key, auth] : secret.auths) {
      out << YAML::BeginMap;
      out << YAML::Key << "key" << YAML::Value << key;
      out << YAML::Key << "username" << YAML::Value << auth.username;
      out << YAML::Key << "password" << YAML::Value << auth.password;
      out << YAML::Key << "error" << YAML::Value << auth.error;
      out << YAML::EndMap;
    }
    out << YAML::EndSeq << YAML::EndMap;
  }
  out << YAML::EndMap << YAML::EndMap;
  if (!out.good()) {
    return Status::Error("cannot encode the ConfigMap state for " + PathIn(state_dir) + ": " +
                         out.GetLastError());
  }
  return WriteFileAtomically(PathIn(state_dir), std::string(out.c_str()) + "\n", 0600);
}

StatusOr<std::optional<ConfigMapInput>> LoadConfigMapState(const std::string& state_dir) {
  std::string path = PathIn(state_dir);
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 && errno == ENOENT) return std::optional<ConfigMapInput>();
  // Never through a link: the shim runs as root and the file holds passwords.
  StatusOr<std::string> read =
      util::ReadWholeFile(path, 16 << 20, util::FileRule::kRegularFileNoLink);
  if (!read.ok()) {
    return Status::Error(read.status().message() +
                         " (the saved ConfigMap state: remove it, the shim writes it again)");
  }
  const std::string& text = *read;
  // The file holds passwords: no message quotes its content.
  auto damaged = [&](const std::string& why) {
    return Status::Error(path + ": the saved ConfigMap state is damaged (" + why +
                         "); it is ignored until the ConfigMap is read again (remove it)");
  };
  try {
    YAML::Node root = YAML::Load(text);
    if (!root.IsMap()) return damaged("not a map");
    if (Text(root["version"]) != std::to_string(kStateVersion)) {
      return damaged("version is not " + std::to_string(kStateVersion));
    }
    ConfigMapInput input;
    input.namespace_ = Text(root["namespace"]);
    input.name = Text(root["name"]);
    input.key = Text(root["key"]);
    input.payload = Text(root["payload"]);
    if (input.namespace_.empty() || input.name.empty() || input.key.empty()) {
      return damaged("no namespace, name or key");
    }
    YAML::Node secrets = root["secrets"];
    if (secrets && !secrets.IsNull()) {
      if (!secrets.IsMap()) return damaged("secrets is not a map");
      for (const auto& item : secrets) {
        DockerConfig secret;
        secret.error = Text(item.second["error"]);
        YAML::Node auths = item.second["auths"];
        if (auths && auths.IsSequence()) {
          for (const auto& entry : auths) {
            DockerAuth auth{Text(entry["username"]), Text(entry["password"]), Text(entry["error"])};
            secret.auths.emplace_back(Text(entry["key"]), std::move(auth));
          }
        }
        input.secrets[item.first.Scalar()] = std::move(secret);
      }
    }
    return std::optional<ConfigMapInput>(std::move(input));
  } catch (const std::exception&) {
    return damaged("not readable YAML");
  }
}

StatusOr<std::optional<ConfigMapInput>> LoadConfigMapStateFor(const std::string& state_dir,
                                                              const KubeSync& settings) {
  StatusOr<std::optional<ConfigMapInput>> saved = LoadConfigMapState(state_dir);
  if (saved.ok() && *saved && !(*saved)->IsFor(settings)) return std::optional<ConfigMapInput>();
  return saved;
}

Status ClearConfigMapState(const std::string& state_dir) {
  std::string path = PathIn(state_dir);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status::Error("cannot remove the saved ConfigMap state " + path + ": " +
                         std::strerror(errno));
  }
  return Status::Ok();
}

}  // namespace shim::config
