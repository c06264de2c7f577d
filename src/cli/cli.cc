#include "cli/cli.h"

#include <google/protobuf/stubs/logging.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <fstream>
#include <map>
#include <memory>
#include <iostream>
#include <sstream>

#include "config/configmap.h"
#include "config/loader.h"
#include "daemon/daemon.h"
#include "image/reference.h"
#include "image/rewriter.h"
#include "kube/api_client.h"
#include "kube/configmap_sync.h"
#include "kube/credentials.h"
#include "kube/docker_config.h"
#include "kube/object_watch.h"
#include "util/log.h"

namespace shim::cli {
namespace {

constexpr int kExitUsage = 2;

// Loads the configuration, printing warnings and errors for a person at a terminal.
config::ConfigPtr Load(const std::string& path) {
  config::LoadResult result = config::LoadConfigFile(path);
  for (const std::string& warning : result.warnings) std::cerr << "warning: " << warning << "\n";
  for (const std::string& error : result.errors) std::cerr << "error: " << error << "\n";
  return result.config;
}

std::string Describe(const image::Candidate& candidate) {
  if (candidate.is_origin()) return "(origin, caller's credentials)";
  std::string who =
      candidate.credentials.empty() ? "anonymous" : "user " + candidate.credentials.username;
  return "(registry " + candidate.registry + ", " + who + ")";
}

// Reads each Secret the payload names (authSecret) once, as the daemon would, and says whether
// it can supply credentials; the lookup it returns lets the merge below judge the payload the
// way the daemon will. Prints names, states and host counts, never a credential.
config::SecretLookup ReadSecrets(kube::ApiClient& api, const config::KubeSync& settings,
                                 const std::string& payload, std::ostream& out) {
  auto found = std::make_shared<std::map<std::string, kube::DockerConfig>>();
  for (const std::string& secret : config::ReferencedSecrets(payload)) {
    std::string name = settings.namespace_ + "/" + secret;
    kube::SyncOptions options;
    options.namespace_ = settings.namespace_;
    options.name = secret;
    kube::ObjectWatch watch(api, "secrets", options, {});
    watch.Step();  // a fresh watch's first step is the read
    out << "secret " << name << " (authSecret): ";
    kube::DockerConfig docker;
    if (watch.state() == kube::SyncState::kSynced && watch.object() && watch.object()->exists) {
      docker = kube::DockerConfigFromSecret(*watch.object(), name);
      if (docker.ok()) {
        out << "readable, entries for " << docker.auths.size() << " registr"
            << (docker.auths.size() == 1 ? "y" : "ies") << "\n";
      } else {
        out << "unusable: " << docker.error << "\n";
      }
    } else if (watch.state() == kube::SyncState::kUnauthorized) {
      docker.error = "Secret " + name + " cannot be read (forbidden)";
      out << "cannot be read (grant get/list/watch on it: deploy/rbac.yaml)\n";
    } else if (watch.state() == kube::SyncState::kAbsent ||
               (watch.object() && !watch.object()->exists)) {
      docker.error = "Secret " + name + " does not exist";
      out << "does not exist; the payload waits for it (the shim watches for it)\n";
    } else {
      docker.error = "Secret " + name + " cannot be read (" +
                     kube::SyncStateName(watch.state()) + ")";
      out << "cannot be read (" << kube::SyncStateName(watch.state()) << ")\n";
    }
    (*found)[secret] = std::move(docker);
  }
  return [found, settings_namespace = settings.namespace_](const std::string& secret,
                                                           const std::string& host) {
    auto it = found->find(secret);
    if (it == found->end()) {
      config::SecretAuth auth;
      auth.problem = "Secret " + settings_namespace + "/" + secret + " was not read";
      return auth;
    }
    return kube::SecretAuthFor(it->second, settings_namespace + "/" + secret, host);
  };
}

// The Kubernetes part of --dry-run: which credentials were found and whether the ConfigMap can
// be read and merged. Informational: the shim serves its local file without it, so the exit
// code does not depend on it. Never prints a token or a password.
void CheckConfigMap(const std::string& path, const config::Config& config, std::ostream& out) {
  const config::KubeSync& settings = config.kube;
  std::string name = settings.namespace_ + "/" + settings.name;
  if (!settings.enabled) {
    out << "configmap: sync off (configMap.enabled: false)\n";
    return;
  }
  kube::Discovery discovery = kube::DiscoverCredentials();
  if (!discovery.credentials) {
    out << "kubernetes: no credentials found; the local file alone will serve\n";
    for (const std::string& line : discovery.tried) out << "  " << line << "\n";
    return;
  }
  out << "kubernetes: credentials " << discovery.credentials->Describe() << "\n";
  auto api = kube::MakeApiClient(*discovery.credentials);
  kube::SyncOptions options;
  options.namespace_ = settings.namespace_;
  options.name = settings.name;
  options.key = settings.key;
  kube::ReadOnce read = kube::ReadConfigMapOnce(*api, options);
  out << "configmap " << name << ": ";
  switch (read.state) {
    case kube::SyncState::kSynced:
      out << "readable, key " << settings.key << " present (" << read.detail << ")\n";
      break;
    case kube::SyncState::kKeyAbsent:
      out << "readable, but it has no key " << settings.key << "; the local file serves\n";
      return;
    case kube::SyncState::kAbsent:
      out << "does not exist; the local file serves (the shim watches for it)\n";
      return;
    case kube::SyncState::kUnauthorized:
      out << "cannot be read: " << read.detail
          << " (grant get/list/watch on it: deploy/rbac.yaml)\n";
      return;
    default:
      out << "cannot be read: " << read.detail << "\n";
      return;
  }
  if (!read.payload) return;
  config::SecretLookup secrets = ReadSecrets(*api, settings, *read.payload, out);
  std::string local_text;
  if (std::ifstream in{path}) {
    std::ostringstream text;
    text << in.rdbuf();
    local_text = text.str();
  }
  config::MergeResult merged =
      config::MergeConfigMap(local_text, path, *read.payload,
                             "ConfigMap " + name + " key " + settings.key, secrets);
  for (const std::string& w : merged.warnings) out << "  warning: " << w << "\n";
  if (!merged.ok()) {
    out << "  the payload would be rejected (nothing written):\n";
    for (const std::string& e : merged.errors) out << "  error: " << e << "\n";
    return;
  }
  out << "  the payload is valid; merged with the local file it "
      << (merged.changed ? "changes it (the shim will rewrite it)" : "matches it") << "\n";
}

int DryRun(const std::string& path) {
  config::ConfigPtr config = Load(path);
  if (!config) {
    std::cerr << "configuration " << path << " is not valid\n";
    return 1;
  }
  std::cout << "# configuration " << path << ": valid; effective values (passwords masked)\n"
            << config::ToMaskedYaml(*config);
  std::cout.flush();
  bool runtime_ok = daemon::CheckRuntime(*config, std::cout);
  std::cout.flush();
  CheckConfigMap(path, *config, std::cout);
  std::cout.flush();
  daemon::CheckRegistries(*config, std::cout);  // informational: the daemon starts either way
  std::cout.flush();
  return runtime_ok ? 0 : 1;
}

}  // namespace

std::string VersionLine() {
  return std::string("image-cri-shim ") + SHIM_VERSION + " (commit " + SHIM_GIT_COMMIT +
         "), CRI runtime.v1 and runtime.v1alpha2";
}

int PrintRewrites(const config::Config& config, const std::vector<std::string>& images,
                  std::ostream& out, std::ostream& err) {
  int status = 0;
  for (const std::string& text : images) {
    if (image::LooksLikeImageId(text)) {
      out << text << " -> " << text << " (image id, not rewritten)\n";
      continue;
    }
    StatusOr<image::Reference> reference = image::ParseReference(text);
    if (!reference.ok()) {
      err << "error: " << reference.status().message() << "\n";
      status = 1;
      continue;
    }
    for (const image::Candidate& candidate : image::Rewrite(*reference, config)) {
      out << text << " -> " << candidate.image << " " << Describe(candidate) << "\n";
    }
  }
  return status;
}

namespace {
// protobuf writes its own complaints to stderr in its own format (for instance a kubelet
// request whose string field is not UTF-8, which then fails to parse and is relayed as it came).
// They go through the shim's log instead: at debug level, as they concern one request, or as
// errors when protobuf itself is about to abort.
void LogFromProtobuf(google::protobuf::LogLevel level, const char* file, int line,
                     const std::string& message) {
  if (level >= google::protobuf::LOGLEVEL_DFATAL) {
    spdlog::error("protobuf: {} at={}:{}", log::Quoted(message), file, line);
  } else {
    spdlog::debug("protobuf: {} at={}:{}", log::Quoted(message), file, line);
  }
}
}  // namespace

int Main(int argc, char** argv) {
  google::protobuf::SetLogHandler(&LogFromProtobuf);
  CLI::App app{
      "image-cri-shim: a CRI proxy between kubelet and the container runtime that sends image "
      "pulls to private registries with their credentials.",
      "image-cri-shim"};
  std::string config_path = kDefaultConfigPath;
  bool debug = false;
  bool dry_run = false;
  bool version = false;
  app.add_option("-f,--file", config_path, "Configuration file")->capture_default_str();
  app.add_flag("--debug", debug, "Log at debug level, whatever the configuration says");
  app.add_flag("--dry-run", dry_run,
               "Load and validate the configuration, print the effective values with passwords "
               "masked, check the runtime socket, and exit");
  app.add_flag("--version", version, "Print the version and exit");

  std::vector<std::string> images;
  CLI::App* rewrite = app.add_subcommand(
      "rewrite", "Print where each image would be pulled from, in order, and as which user");
  rewrite->add_option("IMAGE", images, "Image references, e.g. nginx:latest")->required();
  rewrite->fallthrough();  // accept -f/--debug after the subcommand too

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : kExitUsage;
  }

  if (version) {
    std::cout << VersionLine() << "\n";
    return 0;
  }
  log::Init(debug);
  if (rewrite->parsed()) {
    config::ConfigPtr config = Load(config_path);
    if (!config) return 1;
    return PrintRewrites(*config, images, std::cout, std::cerr);
  }
  if (dry_run) return DryRun(config_path);
  return daemon::Run(daemon::Options{config_path, debug});
}

}  // namespace shim::cli
