#include "kube/config_watch.h"

#include <spdlog/spdlog.h>

#include "config/configmap.h"
#include "kube/docker_config.h"
#include "util/log.h"

namespace shim::kube {

// What the watch of one Secret named by `authSecret` has told so far.
struct ConfigMapWatch::SecretView {
  std::unique_ptr<ObjectWatch> watch;
  bool answered = false;                        // an object, a 404, or a failure before any
  std::optional<config::DockerConfig> content;  // from the last object (or 404) seen
  std::string problem;                          // why it could not be read, while content is unset
  std::optional<SyncState> logged_state;
};

ConfigMapWatch::ConfigMapWatch(const config::KubeSync& settings, const DiscoveryEnv& discovery,
                               double time_scale, OnInput on_input)
    : settings_(settings),
      name_(config::ConfigMapInput::For(settings).Describe()),
      time_scale_(time_scale),
      on_input_(std::move(on_input)) {
  if (!settings_.enabled) {
    spdlog::info("ConfigMap sync is off (configMap.enabled: false)");
    status_.sync_state = "disabled";
    return;
  }
  Discovery found = DiscoverCredentials(discovery);
  if (!found.credentials) {
    // Once per (re)start of the sync, not per tick: a node without a cluster is normal.
    spdlog::info(
        "no Kubernetes credentials found; the local configuration alone serves "
        "looked_at=\"{}\"",
        fmt::join(found.tried, "; "));
    status_.sync_state = "no-credentials";
    return;
  }
  status_.credentials = found.credentials->Describe();
  status_.sync_state = SyncStateName(SyncState::kStarting);
  spdlog::info("ConfigMap sync starting configmap={} credentials=\"{}\"", name_,
               status_.credentials);
  // No wait hooks: the owner's thread never blocks in the client; it polls it.
  client_ = MakeApiClient(*found.credentials);
  SyncOptions options = Timing();
  options.name = settings_.name;
  options.key = settings_.key;
  sync_ = std::make_unique<ConfigMapSync>(
      *client_, options,
      ConfigMapSync::Callbacks{
          .on_payload = [this](const std::optional<std::string>& p) { OnPayload(p); },
          .on_state = [this](SyncState s, const std::string& d) { OnSyncState(s, d); }});
}

ConfigMapWatch::~ConfigMapWatch() {
  // The watches cancel their requests on the client: they go first.
  secrets_.clear();
  sync_.reset();
  client_.reset();
}

SyncOptions ConfigMapWatch::Timing() const {
  SyncOptions options;
  options.namespace_ = settings_.namespace_;
  if (time_scale_ != 1.0) options = options.Scaled(time_scale_);
  return options;
}

std::string ConfigMapWatch::SecretName(const std::string& name) const {
  return settings_.namespace_ + "/" + name;
}

void ConfigMapWatch::Poll(std::chrono::milliseconds max_wait, const std::vector<int>& fds) {
  if (!client_) return;
  Settle();
  sync_->Poke();
  for (auto& [name, secret] : secrets_) secret->watch->Poke();
  client_->Poll(max_wait, fds);
  Settle();
}

// Watches what is named, delivers what is complete; a delivery may change what the owner keeps
// watched (KeepWatching), so the Secrets are reconciled again after it.
void ConfigMapWatch::Settle() {
  ReconcileSecrets();
  if (dirty_) Deliver();
  ReconcileSecrets();
}

std::optional<std::chrono::steady_clock::time_point> ConfigMapWatch::NextDue() const {
  if (!client_) return std::nullopt;
  std::optional<std::chrono::steady_clock::time_point> next;
  auto consider = [&](auto due) {
    if (!next || due < *next) next = due;
  };
  if (!sync_->busy()) consider(sync_->due());
  for (const auto& [name, secret] : secrets_) {
    if (!secret->watch->busy()) consider(secret->watch->due());
  }
  return next;
}

void ConfigMapWatch::OnPayload(const std::optional<std::string>& payload) {
  received_ = true;
  payload_ = payload;
  dirty_ = true;
}

// Watches exactly the Secrets the latest payload names and those kept. All through the one
// client.
void ConfigMapWatch::ReconcileSecrets() {
  std::set<std::string> wanted = also_watched_;
  if (payload_) {
    for (std::string& name : config::ReferencedSecrets(*payload_)) wanted.insert(name);
  }
  for (auto it = secrets_.begin(); it != secrets_.end();) {
    if (wanted.count(it->first) != 0) {
      ++it;
      continue;
    }
    spdlog::info("Secret no longer named by the ConfigMap; not watched any more secret={}",
                 SecretName(it->first));
    status_.secret_states.erase(it->first);
    it = secrets_.erase(it);  // cancels its request
  }
  for (const std::string& name : wanted) {
    if (secrets_.count(name) != 0) continue;
    SyncOptions options = Timing();
    options.name = name;
    auto view = std::make_unique<SecretView>();
    view->watch = std::make_unique<ObjectWatch>(
        *client_, "secrets", options,
        ObjectWatch::Callbacks{
            .on_object = [this, name](const ObjectState& o) { OnSecret(name, o); },
            .on_state = [this, name](SyncState s,
                                     const std::string& d) { OnSecretState(name, s, d); }});
    secrets_[name] = std::move(view);
    spdlog::info("Secret sync starting secret={}", SecretName(name));
  }
}

void ConfigMapWatch::OnSecret(const std::string& name, const ObjectState& object) {
  auto it = secrets_.find(name);
  if (it == secrets_.end()) return;
  SecretView& view = *it->second;
  view.content = DockerConfigFromSecret(object, SecretName(name));
  view.problem.clear();
  view.answered = true;
  dirty_ = true;
  if (!view.content->ok()) {
    spdlog::warn("Secret cannot supply registry credentials secret={} error={}", SecretName(name),
                 log::Quoted(view.content->error));
  } else {
    spdlog::info("Secret read secret={} registries={}", SecretName(name),
                 view.content->auths.size());
  }
  if (on_secret_) on_secret_(name, *view.content);
}

void ConfigMapWatch::OnSecretState(const std::string& name, SyncState state,
                                   const std::string& detail) {
  auto it = secrets_.find(name);
  if (it == secrets_.end()) return;
  SecretView& view = *it->second;
  bool failure = state != SyncState::kSynced && state != SyncState::kAbsent;
  if (failure && !view.content) {
    // Never read: the payload that names it is judged without it (once, logged once).
    view.problem = "Secret " + SecretName(name) + " cannot be read (" + SyncStateName(state) +
                   ": " + detail + ")";
    if (!view.answered) dirty_ = true;
    view.answered = true;
  }
  status_.secret_states[name] =
      state == SyncState::kAbsent ? "secret-absent" : SyncStateName(state);
  if (view.logged_state == state) {
    spdlog::debug("Secret sync state={} secret={} detail=\"{}\"", SyncStateName(state),
                  SecretName(name), detail);
    return;
  }
  view.logged_state = state;
  if (state == SyncState::kSynced) {
    spdlog::info("Secret sync: reading and watching secret={} detail=\"{}\"", SecretName(name),
                 detail);
  } else if (state == SyncState::kAbsent) {
    spdlog::warn(
        "Secret sync: Secret absent; the running configuration stays; watching for it "
        "secret={} detail=\"{}\"",
        SecretName(name), detail);
  } else {
    spdlog::warn(
        "Secret sync: {}, the running configuration stays; retrying with backoff secret={} "
        "detail=\"{}\"",
        SyncStateName(state), SecretName(name), detail);
  }
}

// Hands out the input once the payload and every Secret it names have answered.
void ConfigMapWatch::Deliver() {
  dirty_ = false;
  if (!received_) return;
  std::optional<config::ConfigMapInput> input;
  if (payload_) {
    input = config::ConfigMapInput::For(settings_);
    input->payload = *payload_;
    for (const std::string& name : config::ReferencedSecrets(*payload_)) {
      auto it = secrets_.find(name);
      // OnSecret / OnSecretState mark dirty again when the Secret answers.
      if (it == secrets_.end() || !it->second->answered) return;
      config::DockerConfig content;
      if (it->second->content) {
        content = *it->second->content;
      } else {
        content.error = it->second->problem;
      }
      input->secrets[name] = std::move(content);
    }
  }
  if (delivered_ && *delivered_ == input) return;
  delivered_ = input;
  on_input_(input);
}

void ConfigMapWatch::OnSyncState(SyncState state, const std::string& detail) {
  bool useful =
      state == SyncState::kSynced || state == SyncState::kKeyAbsent || state == SyncState::kAbsent;
  status_.sync_state = SyncStateName(state);
  if (useful) status_.last_sync_ok = std::chrono::system_clock::now();
  if (state == logged_state_) {
    spdlog::debug("ConfigMap sync state={} detail=\"{}\"", SyncStateName(state), detail);
    return;
  }
  logged_state_ = state;
  switch (state) {
    case SyncState::kSynced:
      spdlog::info("ConfigMap sync: reading and watching configmap={} detail=\"{}\"", name_,
                   detail);
      break;
    case SyncState::kKeyAbsent:
    case SyncState::kAbsent:
      spdlog::info(
          "ConfigMap sync: {} absent, the local configuration serves; watching for it "
          "configmap={} detail=\"{}\"",
          state == SyncState::kAbsent ? "ConfigMap" : "key", name_, detail);
      break;
    default:
      spdlog::warn(
          "ConfigMap sync: {}, the last synced ConfigMap (if any) and the local configuration "
          "serve; retrying with backoff configmap={} detail=\"{}\"",
          SyncStateName(state), name_, detail);
      break;
  }
}

}  // namespace shim::kube
