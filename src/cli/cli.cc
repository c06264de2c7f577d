#include "cli/cli.h"

#include <google/protobuf/stubs/logging.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>

#include "config/configmap.h"
#include "config/inputs.h"
#include "config/loader.h"
#include "config/state_dir.h"
#include "daemon/config_file_watch.h"
#include "daemon/config_sources.h"
#include "daemon/daemon.h"
#include "image/policy.h"
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

std::string Describe(const image::Candidate& candidate) {
  if (candidate.is_origin()) return "(origin, caller's credentials)";
  std::string who =
      candidate.credentials.empty() ? "anonymous" : "user " + candidate.credentials.username;
  return "(registry " + candidate.registry + ", " + who + ")";
}

// Reads each Secret the payload names (authSecret) once, as the daemon would, and says whether
// it can supply credentials. Prints names, states and host counts, never a credential.
std::map<std::string, config::DockerConfig> ReadSecrets(kube::ApiClient& api,
                                                        const config::KubeSync& settings,
                                                        const std::string& payload,
                                                        std::ostream& out) {
  std::map<std::string, config::DockerConfig> found;
  for (const std::string& secret : config::ReferencedSecrets(payload)) {
    std::string name = settings.namespace_ + "/" + secret;
    kube::SyncOptions options;
    options.namespace_ = settings.namespace_;
    options.name = secret;
    kube::ObjectWatch watch(api, "secrets", options, {});
    watch.Step();  // a fresh watch's first step is the read
    out << "secret " << name << " (authSecret): ";
    config::DockerConfig docker;
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
      docker.error =
          "Secret " + name + " cannot be read (" + kube::SyncStateName(watch.state()) + ")";
      out << "cannot be read (" << kube::SyncStateName(watch.state()) << ")\n";
    }
    found[secret] = std::move(docker);
  }
  return found;
}

// The ConfigMap's side of the inputs as the daemon would see it now: read once with the Secrets
// it names, or, while the API server cannot be read, the input saved under stateDir. Says
// what it found; never prints a token or a password.
std::optional<config::ConfigMapInput> ReadConfigMapInput(const config::Config& node,
                                                         std::ostream& out) {
  const config::KubeSync& settings = node.kube;
  std::string name = settings.namespace_ + "/" + settings.name;
  if (!settings.enabled) {
    out << "configmap: sync off (configMap.enabled: false)\n";
    return std::nullopt;
  }
  auto saved = [&]() -> std::optional<config::ConfigMapInput> {
    if (node.state_dir.empty()) return std::nullopt;
    StatusOr<std::optional<config::ConfigMapInput>> state =
        config::LoadConfigMapStateFor(node.state_dir, settings);
    if (!state.ok()) {
      out << "  saved ConfigMap state: " << state.status().message() << "\n";
      return std::nullopt;
    }
    if (!*state) return std::nullopt;
    out << "  the last synced ConfigMap, saved in " << node.state_dir
        << ", serves until the API server answers\n";
    return **state;
  };
  kube::Discovery discovery = kube::DiscoverCredentials();
  if (!discovery.credentials) {
    out << "kubernetes: no credentials found\n";
    for (const std::string& line : discovery.tried) out << "  " << line << "\n";
    return saved();
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
      return std::nullopt;
    case kube::SyncState::kAbsent:
      out << "does not exist; the local file serves (the shim watches for it)\n";
      return std::nullopt;
    case kube::SyncState::kUnauthorized:
      out << "cannot be read: " << read.detail
          << " (grant get/list/watch on it: deploy/rbac.yaml)\n";
      return saved();
    default:
      out << "cannot be read: " << read.detail << "\n";
      return saved();
  }
  if (!read.payload) return std::nullopt;
  config::ConfigMapInput input = config::ConfigMapInput::For(settings);
  input.payload = *read.payload;
  input.secrets = ReadSecrets(*api, settings, *read.payload, out);
  return input;
}

int DryRun(const std::string& path) {
  config::ConfigInputs inputs;
  inputs.file_path = path;
  std::string error;
  if (std::optional<std::string> text = daemon::ConfigFileWatch::Read(path, &error)) {
    inputs.file_text = *text;
  } else {
    inputs.file_error = error + " (choose another with --file)";
  }
  config::Resolved alone = config::Resolve(inputs);
  // The file names the node's own settings (the ConfigMap, stateDir); a file that needs the
  // ConfigMap for its primary registry is still read for them.
  config::LoadResult node =
      config::ParseConfig(inputs.file_text, path, config::ParseOptions{.partial = true});
  if (!inputs.file_error.empty() || !node.ok()) {
    for (const std::string& w : alone.warnings) std::cerr << "warning: " << w << "\n";
    for (const std::string& e : alone.errors) std::cerr << "error: " << e << "\n";
    std::cerr << "configuration " << path << " is not valid\n";
    return 1;
  }
  inputs.configmap = ReadConfigMapInput(*node.config, std::cout);
  config::Resolved resolved = config::Resolve(inputs);
  if (inputs.configmap) {
    for (const std::string& w : resolved.warnings) std::cout << "  warning: " << w << "\n";
    if (resolved.ok()) {
      std::cout << "  the payload is valid; merged with the local file it serves\n";
    } else {
      std::cout << "  the payload would be rejected; the configuration in force keeps serving:\n";
      for (const std::string& e : resolved.errors) std::cout << "  error: " << e << "\n";
      resolved = std::move(alone);
    }
  } else {
    resolved = std::move(alone);
  }
  if (!resolved.ok()) {
    for (const std::string& w : resolved.warnings) std::cerr << "warning: " << w << "\n";
    for (const std::string& e : resolved.errors) std::cerr << "error: " << e << "\n";
    std::cerr << "configuration " << path << " is not valid\n";
    return 1;
  }
  if (!inputs.configmap) {
    for (const std::string& w : resolved.warnings) std::cerr << "warning: " << w << "\n";
  }
  std::cout << "# configuration " << path
            << ": valid; effective values (passwords masked), each with where it came from\n"
            << config::ToMaskedYaml(*resolved.config, &resolved.origins);
  std::cout.flush();
  bool runtime_ok = daemon::CheckRuntime(*resolved.config, std::cout);
  std::cout.flush();
  daemon::CheckRegistries(*resolved.config,
                          std::cout);  // informational: the daemon starts either way
  std::cout.flush();
  return runtime_ok ? 0 : 1;
}

}  // namespace

std::string VersionLine() {
  return std::string("image-cri-shim ") + SHIM_VERSION + " (commit " + SHIM_GIT_COMMIT +
         "), CRI runtime.v1 and runtime.v1alpha2";
}

int PrintRewrites(const config::Config& config, const std::vector<std::string>& images,
                  const std::optional<std::string>& pod_namespace, std::ostream& out,
                  std::ostream& err) {
  int status = 0;
  for (const std::string& text : images) {
    if (image::LooksLikeImageId(text)) {
      if (auto refusal = image::CheckUncheckable(config)) {
        out << text << " -> refused: " << refusal->rule << "\n";
        status = 1;
        continue;
      }
      out << text << " -> " << text << " (image id, not rewritten)\n";
      continue;
    }
    StatusOr<image::Reference> reference = image::ParseReference(text);
    if (!reference.ok()) {
      err << "error: " << reference.status().message() << "\n";
      status = 1;
      continue;
    }
    if (auto refusal = image::CheckPolicy(*reference, config)) {
      out << text << " -> refused: " << refusal->rule << "\n";
      status = 1;
      continue;
    }
    // Without --namespace: a pull without a pod (crictl, prePull).
    image::PullScope scope = image::PullScope::ForPod(pod_namespace.value_or(""));
    for (const image::Candidate& candidate : image::Rewrite(*reference, config, scope)) {
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
  // FATAL, not DFATAL: in a release build DFATAL is ERROR, the level of a per-request complaint.
  if (level >= google::protobuf::LOGLEVEL_FATAL) {
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
  std::optional<std::string> pod_namespace;
  CLI::App* rewrite = app.add_subcommand(
      "rewrite",
      "Print where each image would be pulled from, in order, and as which user, or the policy "
      "rule that refuses it");
  rewrite->add_option("IMAGE", images, "Image references, e.g. nginx:latest")->required();
  rewrite->add_option("--namespace,-n", pod_namespace,
                      "The namespace of the pod that wants the images (registries with "
                      "`namespaces` serve only their pods); without it, a pull without a pod");
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
    // What the daemon serves: the file with the ConfigMap last synced, when one was saved.
    daemon::StartupConfig startup = daemon::ResolveAtStart(config_path, /*announce=*/false);
    for (const std::string& w : startup.resolved.warnings) std::cerr << "warning: " << w << "\n";
    for (const std::string& e : startup.resolved.errors) std::cerr << "error: " << e << "\n";
    if (!startup.resolved.ok()) return 1;
    return PrintRewrites(*startup.resolved.config, images, pod_namespace, std::cout, std::cerr);
  }
  if (dry_run) return DryRun(config_path);
  return daemon::Run(daemon::Options{config_path, debug});
}

}  // namespace shim::cli
