#include "daemon/config_sources.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <spdlog/spdlog.h>

#include "config/configmap.h"
#include "config/loader.h"
#include "config/writer.h"
#include "kube/api_client.h"
#include "kube/configmap_sync.h"
#include "kube/docker_config.h"
#include "kube/object_watch.h"
#include "util/log.h"

namespace shim::daemon {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// Editors write a file in several steps; events closer together than this make one reload.
constexpr auto kFileSettle = 50ms;

std::optional<std::string> ReadText(const std::string& path, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = path + ": cannot read the configuration file: " + std::strerror(errno);
    return std::nullopt;
  }
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void LogRegistries(const config::Config& config) {
  for (size_t i = 0; i < config.registries.size(); ++i) {
    const auto& r = config.registries[i];
    spdlog::info("registry index={} address={} auth={}", i, r.address,
                 r.auth.empty() ? "anonymous" : config::Masked(r.auth));
  }
}

bool SameKubeSettings(const config::KubeSync& a, const config::KubeSync& b) {
  return a.enabled == b.enabled && a.namespace_ == b.namespace_ && a.name == b.name &&
         a.key == b.key;
}

double TimeScale(double option) {
  if (option > 0) return option;
  if (const char* text = std::getenv("SHIM_KUBE_TIME_SCALE")) {
    char* end = nullptr;
    double value = std::strtod(text, &end);
    if (end != text && value > 0) return value;
  }
  return 1.0;
}

}  // namespace

const char* ReloadSourceName(ReloadSource source) {
  switch (source) {
    case ReloadSource::kFile:
      return "file";
    case ReloadSource::kInterval:
      return "interval";
    case ReloadSource::kSignal:
      return "signal";
    case ReloadSource::kConfigMap:
      return "configmap";
  }
  return "unknown";
}

// Everything the background thread owns. Lives on that thread's stack; only `owner_` members
// documented as thread-safe are touched from elsewhere.
class ConfigSources::Worker {
 public:
  Worker(ConfigSources& owner) : owner_(owner), path_(owner.options_.config_path) {
    running_ = owner_.store_.Get();
    directory_ = std::filesystem::path(path_).parent_path().string();
    if (directory_.empty()) directory_ = ".";
    base_name_ = std::filesystem::path(path_).filename().string();
    time_scale_ = TimeScale(owner_.options_.kube_time_scale);
  }
  ~Worker() {
    if (inotify_fd_ >= 0) ::close(inotify_fd_);
  }

  void Run() {
    inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (inotify_fd_ < 0 ||
        ::inotify_add_watch(inotify_fd_, directory_.c_str(),
                            IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE) < 0) {
      spdlog::warn(
          "cannot watch the configuration directory; changes are picked up every "
          "reloadInterval and on SIGHUP only dir={} error={}",
          directory_, log::Quoted(std::strerror(errno)));
    }
    // The daemon loaded the file just before; if it changed since, that change is a reload.
    std::string error;
    std::optional<std::string> text = ReadText(path_, &error);
    config::LoadResult loaded = config::ParseConfig(text.value_or(""), path_);
    next_interval_ = Clock::now() + running_->reload_interval;
    if (text && loaded.ok() && *loaded.config == *running_) {
      last_text_ = *text;
    } else {
      Reload(ReloadSource::kFile);
    }
    SetUpKube();

    // One loop for everything: the file, SIGHUP, and every request to the API (the ConfigMap's
    // watch and the watches of the Secrets it names, multiplexed on one curl multi handle).
    while (!owner_.stopping_) {
      ServeEvents();
      if (owner_.stopping_) break;
      if (kube_reset_) SetUpKube();
      if (!client_) {
        pollfd fds[2] = {{owner_.wake_fd_, POLLIN, 0}, {inotify_fd_, POLLIN, 0}};
        ::poll(fds, inotify_fd_ >= 0 ? 2 : 1, static_cast<int>(NextWait(true).count()));
        continue;
      }
      ReconcileSecrets();
      if (kube_dirty_) ApplyKube();
      sync_->Poke();
      for (auto& [name, secret] : secrets_) secret.watch->Poke();
      client_->Poll(NextWait(true), {owner_.wake_fd_, inotify_fd_});
    }
  }

 private:
  // The wait until the next timer of this thread (file settle, interval, sync step).
  std::chrono::milliseconds NextWait(bool include_sync) const {
    auto next = next_interval_;
    if (file_due_) next = std::min(next, *file_due_);
    if (include_sync && sync_ && !sync_->busy()) next = std::min(next, sync_->due());
    if (include_sync) {
      for (const auto& [name, secret] : secrets_) {
        if (!secret.watch->busy()) next = std::min(next, secret.watch->due());
      }
    }
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()) + 1ms;
    return std::clamp(wait, 0ms, std::chrono::milliseconds(60000));
  }

  // Handles whatever is due without blocking on anything but the file reads themselves; runs
  // between two polls of the API client, so while watches are open. Returns false when
  // stopping or when the Kubernetes side must be set up again.
  bool ServeEvents() {
    if (inotify_fd_ >= 0) DrainInotify();
    uint64_t count;
    while (::read(owner_.wake_fd_, &count, sizeof count) == sizeof count) {
    }
    if (owner_.stopping_) return false;
    if (owner_.reload_requested_.exchange(false)) {
      spdlog::info("SIGHUP: reloading configuration path={}", path_);
      if (!kube_found_ && running_->kube.enabled) kube_reset_ = true;  // installed since?
      Reload(ReloadSource::kSignal);
      if (owner_.options_.on_requested_reload_done) owner_.options_.on_requested_reload_done();
    }
    auto now = Clock::now();
    if (file_due_ && now >= *file_due_) {
      file_due_.reset();
      Reload(ReloadSource::kFile);
    }
    if (now >= next_interval_) {
      Reload(ReloadSource::kInterval);
      next_interval_ = Clock::now() + running_->reload_interval;
    }
    return !owner_.stopping_ && !kube_reset_;
  }

  void DrainInotify() {
    alignas(inotify_event) char buffer[4096];
    while (true) {
      ssize_t n = ::read(inotify_fd_, buffer, sizeof buffer);
      if (n <= 0) return;
      for (char* p = buffer; p < buffer + n;) {
        auto* event = reinterpret_cast<inotify_event*>(p);
        std::string name = event->len > 0 ? event->name : "";
        // The file itself, or any rename into the directory (a mounted ConfigMap volume swaps
        // a `..data` symlink): re-reading is cheap and unchanged content is skipped.
        if (name == base_name_ || (event->mask & IN_MOVED_TO)) {
          if (!file_due_) file_due_ = Clock::now() + kFileSettle;
        }
        p += sizeof(inotify_event) + event->len;
      }
    }
  }

  void Count(ReloadSource source, bool ok) {
    std::lock_guard lock(owner_.stats_mutex_);
    auto index = static_cast<size_t>(source);
    if (ok) {
      ++owner_.stats_.reloads_ok[index];
      owner_.stats_.last_reload_ok = std::chrono::system_clock::now();
    } else {
      ++owner_.stats_.reloads_failed[index];
    }
  }

  void Reject(ReloadSource source, const std::vector<std::string>& errors) {
    for (const auto& e : errors) {
      spdlog::error(
          "config reload rejected, the running configuration stays source={} "
          "error={}",
          ReloadSourceName(source), log::Quoted(e));
    }
    Count(source, false);
  }

  // Publishes `next` (keeping the running sockets: they cannot change without a restart).
  void Publish(ReloadSource source, const config::ConfigPtr& next) {
    auto copy = std::make_shared<config::Config>(*next);
    const config::Config& running = *owner_.store_.Get();
    if (copy->shim_socket != running.shim_socket || copy->cri_socket != running.cri_socket) {
      std::string wanted = copy->shim_socket + " " + copy->cri_socket;
      if (wanted != restart_warned_) {
        spdlog::warn(
            "a change of `shim` or `cri` needs a restart; keeping shim={} cri={} until "
            "then",
            running.shim_socket, running.cri_socket);
        restart_warned_ = wanted;
      }
      copy->shim_socket = running.shim_socket;
      copy->cri_socket = running.cri_socket;
    }
    bool kube_changed = !SameKubeSettings(copy->kube, running_->kube);
    running_ = copy;
    owner_.store_.Swap(copy);
    log::SetDebug(copy->debug || owner_.options_.force_debug);
    next_interval_ = std::min(next_interval_, Clock::now() + copy->reload_interval);
    spdlog::info("config reloaded source={} path={} registries={} debug={}",
                 ReloadSourceName(source), path_, copy->registries.size(), copy->debug);
    LogRegistries(*copy);
    Count(source, true);
    if (kube_changed) kube_reset_ = true;
  }

  // Re-reads the file, merges the ConfigMap payload in force (writing the file back when the
  // merge changes it), validates and publishes.
  void Reload(ReloadSource source) {
    std::string error;
    std::optional<std::string> text = ReadText(path_, &error);
    if (!text) {
      Reject(source, {error});
      return;
    }
    // Unchanged input (often our own write coming back as an event): nothing to do, unless an
    // operator explicitly asked.
    if (source != ReloadSource::kSignal &&
        ((*text == last_text_ && payload_ == last_payload_used_ &&
          in_force_generation_ == last_generation_used_) ||
         (*text == last_rejected_text_ && payload_ == last_rejected_payload_ &&
          in_force_generation_ == last_rejected_generation_))) {
      return;
    }
    config::LoadResult loaded;
    std::string on_disk = *text;
    if (payload_) {
      // The payload in force with the Secret contents it was accepted with.
      config::MergeResult merged =
          config::MergeConfigMap(*text, path_, *payload_, PayloadName(), Lookup(secrets_in_force_));
      for (const auto& w : merged.warnings) spdlog::warn("config warning: {}", w);
      if (!merged.ok()) {
        last_rejected_text_ = *text;
        last_rejected_payload_ = payload_;
        last_rejected_generation_ = in_force_generation_;
        Reject(source, merged.errors);
        return;
      }
      if (merged.changed) on_disk = Write(merged.text) ? merged.text : *text;
      loaded = std::move(merged.loaded);
    } else {
      loaded = config::ParseConfig(*text, path_);
      for (const auto& w : loaded.warnings) spdlog::warn("config warning: {}", w);
      if (!loaded.ok()) {
        last_rejected_text_ = *text;
        last_rejected_payload_ = payload_;
        last_rejected_generation_ = in_force_generation_;
        Reject(source, loaded.errors);
        return;
      }
    }
    last_text_ = on_disk;
    last_payload_used_ = payload_;
    last_generation_used_ = in_force_generation_;
    Publish(source, loaded.config);
  }

  bool Write(const std::string& text) {
    Status status = config::WriteFileAtomically(path_, text, 0600);
    if (!status.ok()) {
      spdlog::error(
          "cannot write the merged configuration; it is applied in memory only "
          "error={}",
          log::Quoted(status.message()));
      return false;
    }
    spdlog::info("configuration file updated from the ConfigMap path={} mode=0600", path_);
    return true;
  }

  std::string PayloadName() const {
    const auto& k = running_->kube;
    return "ConfigMap " + k.namespace_ + "/" + k.name + " key " + k.key;
  }

  // A new value of the ConfigMap key (nullopt: gone). Applied by ApplyKube() from the loop,
  // once the Secrets it names have answered.
  void OnPayload(const std::optional<std::string>& payload) {
    received_payload_ = payload;
    kube_dirty_ = true;
  }

  // What the watch of one Secret named by `authSecret` has told so far.
  struct SecretView {
    std::unique_ptr<kube::ObjectWatch> watch;
    bool answered = false;                     // an object, a 404, or a failure before any
    std::optional<kube::DockerConfig> config;  // from the last object (or 404) seen
    std::string problem;                       // why it could not be read, while config is unset
    std::optional<kube::SyncState> logged_state;
  };
  // A Secret's content as a merge uses it (also the snapshot kept with the payload in force).
  struct SecretContent {
    std::optional<kube::DockerConfig> config;
    std::string problem;
  };

  std::string SecretName(const std::string& name) const {
    return running_->kube.namespace_ + "/" + name;
  }

  config::SecretLookup Lookup(const std::map<std::string, SecretContent>& contents) const {
    std::string ns = running_->kube.namespace_;
    return [&contents, ns](const std::string& name, const std::string& host) {
      config::SecretAuth out;
      std::string full = "Secret " + ns + "/" + name;
      auto it = contents.find(name);
      if (it == contents.end()) {
        out.problem = full + " has not been read";
      } else if (!it->second.config) {
        out.problem = it->second.problem;
      } else {
        out = kube::SecretAuthFor(*it->second.config, ns + "/" + name, host);
      }
      return out;
    };
  }

  std::map<std::string, SecretContent> Contents(const std::vector<std::string>& names) const {
    std::map<std::string, SecretContent> out;
    for (const std::string& name : names) {
      auto it = secrets_.find(name);
      if (it == secrets_.end()) continue;
      out[name] = SecretContent{it->second.config, it->second.problem};
    }
    return out;
  }

  // Watches exactly the Secrets named by the payload received and by the payload in force (the
  // latter so that a rotation still reaches the running configuration while a newer payload is
  // rejected). All on this thread, through the one client.
  void ReconcileSecrets() {
    std::set<std::string> wanted;
    for (const auto* payload : {&received_payload_, &payload_}) {
      if (!*payload) continue;
      for (std::string& name : config::ReferencedSecrets(**payload)) wanted.insert(name);
    }
    for (auto it = secrets_.begin(); it != secrets_.end();) {
      if (wanted.count(it->first) != 0) {
        ++it;
        continue;
      }
      spdlog::info("Secret no longer named by the ConfigMap; not watched any more secret={}",
                   SecretName(it->first));
      {
        std::lock_guard lock(owner_.stats_mutex_);
        owner_.stats_.secret_states.erase(it->first);
      }
      it = secrets_.erase(it);  // cancels its request
    }
    for (const std::string& name : wanted) {
      if (secrets_.count(name) != 0) continue;
      kube::SyncOptions options = SyncTiming();
      options.name = name;
      SecretView& view = secrets_[name];
      view.watch = std::make_unique<kube::ObjectWatch>(
          *client_, "secrets", options,
          kube::ObjectWatch::Callbacks{
              .on_object = [this, name](const kube::ObjectState& o) { OnSecret(name, o); },
              .on_state = [this, name](kube::SyncState s,
                                       const std::string& d) { OnSecretState(name, s, d); }});
      spdlog::info("Secret sync starting secret={}", SecretName(name));
    }
  }

  void OnSecret(const std::string& name, const kube::ObjectState& object) {
    auto it = secrets_.find(name);
    if (it == secrets_.end()) return;
    it->second.config = kube::DockerConfigFromSecret(object, SecretName(name));
    it->second.problem.clear();
    it->second.answered = true;
    kube_dirty_ = true;
    if (!it->second.config->ok()) {
      spdlog::warn("Secret cannot supply registry credentials secret={} error={}",
                   SecretName(name), log::Quoted(it->second.config->error));
    } else {
      spdlog::info("Secret read secret={} registries={}", SecretName(name),
                   it->second.config->auths.size());
    }
  }

  void OnSecretState(const std::string& name, kube::SyncState state, const std::string& detail) {
    auto it = secrets_.find(name);
    if (it == secrets_.end()) return;
    SecretView& view = it->second;
    bool failure = state != kube::SyncState::kSynced && state != kube::SyncState::kAbsent;
    if (failure && !view.config) {
      // Never read: the payload that names it cannot be applied yet (tried once, logged once).
      view.problem = "Secret " + SecretName(name) + " cannot be read (" +
                     kube::SyncStateName(state) + ": " + detail + ")";
      if (!view.answered) kube_dirty_ = true;
      view.answered = true;
    }
    {
      std::lock_guard lock(owner_.stats_mutex_);
      owner_.stats_.secret_states[name] =
          state == kube::SyncState::kAbsent ? "secret-absent" : kube::SyncStateName(state);
    }
    if (view.logged_state == state) {
      spdlog::debug("Secret sync state={} secret={} detail=\"{}\"", kube::SyncStateName(state),
                    SecretName(name), detail);
      return;
    }
    view.logged_state = state;
    if (state == kube::SyncState::kSynced) {
      spdlog::info("Secret sync: reading and watching secret={} detail=\"{}\"", SecretName(name),
                   detail);
    } else if (state == kube::SyncState::kAbsent) {
      spdlog::warn(
          "Secret sync: Secret absent; the running configuration stays; watching for it "
          "secret={} detail=\"{}\"",
          SecretName(name), detail);
    } else {
      spdlog::warn(
          "Secret sync: {}, the running configuration stays; retrying with backoff secret={} "
          "detail=\"{}\"",
          kube::SyncStateName(state), SecretName(name), detail);
    }
  }

  // Merges the payload received with the Secrets it names into the file, once each of those
  // Secrets has answered. Valid: written (when it changes the file), published, and kept in
  // force with the Secret contents used. Invalid (a Secret that cannot supply credentials
  // included): rejected whole, nothing written, the configuration in force keeps serving.
  void ApplyKube() {
    kube_dirty_ = false;
    if (!received_payload_) {
      // The file already holds what the last payload set; it simply stops being overridden.
      payload_.reset();
      secrets_in_force_.clear();
      ++in_force_generation_;
      return;
    }
    std::vector<std::string> names = config::ReferencedSecrets(*received_payload_);
    for (const std::string& name : names) {
      auto it = secrets_.find(name);
      // OnSecret / OnSecretState sets kube_dirty_ again when the Secret answers.
      if (it == secrets_.end() || !it->second.answered) return;
    }
    std::string error;
    std::optional<std::string> text = ReadText(path_, &error);
    if (!text) {
      Reject(ReloadSource::kConfigMap, {error});
      return;
    }
    std::map<std::string, SecretContent> contents = Contents(names);
    config::MergeResult merged =
        config::MergeConfigMap(*text, path_, *received_payload_, PayloadName(), Lookup(contents));
    for (const auto& w : merged.warnings) spdlog::warn("config warning: {}", w);
    if (!merged.ok()) {
      // Rejected whole: nothing written, and the previous payload (if any) stays in force.
      spdlog::error("ConfigMap payload rejected, nothing written configmap={}", PayloadName());
      Reject(ReloadSource::kConfigMap, merged.errors);
      return;
    }
    payload_ = received_payload_;
    secrets_in_force_ = std::move(contents);
    ++in_force_generation_;
    std::string on_disk = *text;
    if (merged.changed) {
      if (Write(merged.text)) on_disk = merged.text;
    } else {
      spdlog::info("the configuration file already matches the ConfigMap configmap={}",
                   PayloadName());
    }
    last_text_ = on_disk;
    last_payload_used_ = payload_;
    last_generation_used_ = in_force_generation_;
    Publish(ReloadSource::kConfigMap, merged.loaded.config);
  }

  kube::SyncOptions SyncTiming() const {
    kube::SyncOptions options;
    options.namespace_ = running_->kube.namespace_;
    if (time_scale_ != 1.0) options = options.Scaled(time_scale_);
    return options;
  }

  void OnSyncState(kube::SyncState state, const std::string& detail) {
    bool useful = state == kube::SyncState::kSynced || state == kube::SyncState::kKeyAbsent ||
                  state == kube::SyncState::kAbsent;
    {
      std::lock_guard lock(owner_.stats_mutex_);
      owner_.stats_.sync_state = kube::SyncStateName(state);
      if (useful) owner_.stats_.last_sync_ok = std::chrono::system_clock::now();
    }
    if (state == logged_state_) {
      spdlog::debug("ConfigMap sync state={} detail=\"{}\"", kube::SyncStateName(state), detail);
      return;
    }
    logged_state_ = state;
    std::string name = PayloadName();
    switch (state) {
      case kube::SyncState::kSynced:
        spdlog::info("ConfigMap sync: reading and watching configmap={} detail=\"{}\"", name,
                     detail);
        break;
      case kube::SyncState::kKeyAbsent:
      case kube::SyncState::kAbsent:
        spdlog::info(
            "ConfigMap sync: {} absent, the local configuration serves; watching for it "
            "configmap={} detail=\"{}\"",
            state == kube::SyncState::kAbsent ? "ConfigMap" : "key", name, detail);
        break;
      default:
        spdlog::warn(
            "ConfigMap sync: {}, the local configuration serves; retrying with backoff "
            "configmap={} detail=\"{}\"",
            kube::SyncStateName(state), name, detail);
        break;
    }
  }

  void SetSyncStateName(const std::string& name, const std::string& credentials) {
    std::lock_guard lock(owner_.stats_mutex_);
    owner_.stats_.sync_state = name;
    owner_.stats_.credentials = credentials;
  }

  // (Re)builds the ConfigMap sync for the configuration in force.
  void SetUpKube() {
    kube_reset_ = false;
    secrets_.clear();  // their watches use the client
    sync_.reset();
    client_.reset();
    payload_.reset();
    received_payload_.reset();
    secrets_in_force_.clear();
    ++in_force_generation_;
    kube_dirty_ = false;
    {
      std::lock_guard lock(owner_.stats_mutex_);
      owner_.stats_.secret_states.clear();
    }
    logged_state_.reset();
    const config::KubeSync& settings = running_->kube;
    if (!settings.enabled) {
      spdlog::info("ConfigMap sync is off (configMap.enabled: false)");
      SetSyncStateName("disabled", "");
      return;
    }
    kube::Discovery discovery = kube::DiscoverCredentials(owner_.options_.discovery);
    kube_found_ = discovery.credentials.has_value();
    if (!discovery.credentials) {
      // Once per (re)start of the sync, not per tick: a node without a cluster is normal.
      spdlog::info(
          "no Kubernetes credentials found; the local configuration alone serves "
          "looked_at=\"{}\"",
          fmt::join(discovery.tried, "; "));
      SetSyncStateName("no-credentials", "");
      return;
    }
    std::string described = discovery.credentials->Describe();
    spdlog::info("ConfigMap sync starting configmap={} credentials=\"{}\"", PayloadName(),
                 described);
    SetSyncStateName(kube::SyncStateName(kube::SyncState::kStarting), described);
    // No wait hooks: this thread never blocks in the client; it polls it (Run).
    client_ = kube::MakeApiClient(*discovery.credentials);
    kube::SyncOptions options = SyncTiming();
    options.name = settings.name;
    options.key = settings.key;
    sync_ = std::make_unique<kube::ConfigMapSync>(
        *client_, options,
        kube::ConfigMapSync::Callbacks{
            .on_payload = [this](const std::optional<std::string>& p) { OnPayload(p); },
            .on_state = [this](kube::SyncState s, const std::string& d) { OnSyncState(s, d); }});
  }

  ConfigSources& owner_;
  std::string path_;
  std::string directory_;
  std::string base_name_;
  double time_scale_ = 1.0;
  int inotify_fd_ = -1;
  config::ConfigPtr running_;  // the last configuration published (or the initial one)

  std::string last_text_;  // the file content behind running_
  std::optional<std::string> last_payload_used_;
  std::string last_rejected_text_;  // skip re-rejecting the same input every interval
  std::optional<std::string> last_rejected_payload_;
  std::string restart_warned_;

  std::optional<Clock::time_point> file_due_;
  Clock::time_point next_interval_;

  std::unique_ptr<kube::ApiClient> client_;
  std::unique_ptr<kube::ConfigMapSync> sync_;  // uses client_
  std::map<std::string, SecretView> secrets_;  // by Secret name; use client_
  bool kube_reset_ = false;
  bool kube_found_ = false;
  bool kube_dirty_ = false;                      // the payload or a Secret changed: ApplyKube()
  std::optional<std::string> received_payload_;  // the ConfigMap's latest value
  std::optional<std::string> payload_;           // the valid ConfigMap payload in force
  std::map<std::string, SecretContent> secrets_in_force_;  // the Secrets payload_ was merged with
  uint64_t in_force_generation_ = 0;  // changes with payload_ or secrets_in_force_
  uint64_t last_generation_used_ = 0;
  uint64_t last_rejected_generation_ = 0;
  std::optional<kube::SyncState> logged_state_;
};

ConfigSources::ConfigSources(ConfigSourcesOptions options, config::ConfigStore& store)
    : options_(std::move(options)), store_(store) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    // Without it neither SIGHUP nor Stop could reach the thread: a broken machine, not input.
    spdlog::critical("eventfd failed error=\"{}\"", std::strerror(errno));
    std::abort();
  }
}

ConfigSources::~ConfigSources() {
  Stop();
  ::close(wake_fd_);
}

void ConfigSources::Start() {
  thread_ = std::thread([this] {
    Worker worker(*this);
    worker.Run();
  });
}

void ConfigSources::RequestReload() {
  reload_requested_ = true;
  uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

void ConfigSources::Stop() {
  stopping_ = true;
  uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
}

ConfigSourceStats ConfigSources::stats() const {
  std::lock_guard lock(stats_mutex_);
  return stats_;
}

}  // namespace shim::daemon
