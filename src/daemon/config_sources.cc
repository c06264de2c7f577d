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
#include <sstream>

#include <spdlog/spdlog.h>

#include "config/configmap.h"
#include "config/loader.h"
#include "config/writer.h"
#include "kube/api_client.h"
#include "kube/configmap_sync.h"
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
          "reloadInterval and on SIGHUP only dir={} error=\"{}\"",
          directory_, std::strerror(errno));
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

    while (!owner_.stopping_) {
      ServeEvents();
      if (owner_.stopping_) break;
      if (kube_reset_) SetUpKube();
      if (sync_ && Clock::now() >= next_sync_) {
        auto delay = sync_->Step();
        next_sync_ = Clock::now() + delay;
        continue;
      }
      pollfd fds[2] = {{owner_.wake_fd_, POLLIN, 0}, {inotify_fd_, POLLIN, 0}};
      ::poll(fds, inotify_fd_ >= 0 ? 2 : 1, static_cast<int>(NextWait(true).count()));
    }
  }

 private:
  // The wait until the next timer of this thread (file settle, interval, sync step).
  std::chrono::milliseconds NextWait(bool include_sync) const {
    auto next = next_interval_;
    if (file_due_) next = std::min(next, *file_due_);
    if (include_sync && sync_) next = std::min(next, next_sync_);
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()) + 1ms;
    return std::clamp(wait, 0ms, std::chrono::milliseconds(60000));
  }

  // Handles whatever is due without blocking on anything but the file reads themselves. Also
  // runs while a watch is in progress (from the API client's wait hook); returns false when
  // that request should be abandoned.
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
          "error=\"{}\"",
          ReloadSourceName(source), e);
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
        ((*text == last_text_ && payload_ == last_payload_used_) ||
         (*text == last_rejected_text_ && payload_ == last_rejected_payload_))) {
      return;
    }
    config::LoadResult loaded;
    std::string on_disk = *text;
    if (payload_) {
      config::MergeResult merged = config::MergeConfigMap(*text, path_, *payload_, PayloadName());
      for (const auto& w : merged.warnings) spdlog::warn("config warning: {}", w);
      if (!merged.ok()) {
        last_rejected_text_ = *text;
        last_rejected_payload_ = payload_;
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
        Reject(source, loaded.errors);
        return;
      }
    }
    last_text_ = on_disk;
    last_payload_used_ = payload_;
    Publish(source, loaded.config);
  }

  bool Write(const std::string& text) {
    Status status = config::WriteFileAtomically(path_, text, 0600);
    if (!status.ok()) {
      spdlog::error(
          "cannot write the merged configuration; it is applied in memory only "
          "error=\"{}\"",
          status.message());
      return false;
    }
    spdlog::info("configuration file updated from the ConfigMap path={} mode=0600", path_);
    return true;
  }

  std::string PayloadName() const {
    const auto& k = running_->kube;
    return "ConfigMap " + k.namespace_ + "/" + k.name + " key " + k.key;
  }

  // A new value of the ConfigMap key (nullopt: gone). Valid payloads are merged into the file.
  void OnPayload(const std::optional<std::string>& payload) {
    if (!payload) {
      // The file already holds what the last payload set; it simply stops being overridden.
      payload_.reset();
      return;
    }
    std::string error;
    std::optional<std::string> text = ReadText(path_, &error);
    if (!text) {
      Reject(ReloadSource::kConfigMap, {error});
      return;
    }
    config::MergeResult merged = config::MergeConfigMap(*text, path_, *payload, PayloadName());
    for (const auto& w : merged.warnings) spdlog::warn("config warning: {}", w);
    if (!merged.ok()) {
      // Rejected whole: nothing written, and the previous payload (if any) stays in force.
      spdlog::error("ConfigMap payload rejected, nothing written configmap={}", PayloadName());
      Reject(ReloadSource::kConfigMap, merged.errors);
      return;
    }
    payload_ = payload;
    std::string on_disk = *text;
    if (merged.changed) {
      if (Write(merged.text)) on_disk = merged.text;
    } else {
      spdlog::info("the configuration file already matches the ConfigMap configmap={}",
                   PayloadName());
    }
    last_text_ = on_disk;
    last_payload_used_ = payload_;
    Publish(ReloadSource::kConfigMap, merged.loaded.config);
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
    sync_.reset();
    client_.reset();
    payload_.reset();
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
    kube::WaitHooks hooks;
    hooks.fds = {owner_.wake_fd_};
    if (inotify_fd_ >= 0) hooks.fds.push_back(inotify_fd_);
    hooks.on_wake = [this] { return ServeEvents(); };
    hooks.max_wait = [this] { return NextWait(false); };
    client_ = kube::MakeApiClient(*discovery.credentials, std::move(hooks));
    kube::SyncOptions options;
    options.namespace_ = settings.namespace_;
    options.name = settings.name;
    options.key = settings.key;
    if (time_scale_ != 1.0) options = options.Scaled(time_scale_);
    sync_ = std::make_unique<kube::ConfigMapSync>(
        *client_, options,
        kube::ConfigMapSync::Callbacks{
            .on_payload = [this](const std::optional<std::string>& p) { OnPayload(p); },
            .on_state = [this](kube::SyncState s, const std::string& d) { OnSyncState(s, d); }});
    next_sync_ = Clock::now();
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
  std::unique_ptr<kube::ConfigMapSync> sync_;
  Clock::time_point next_sync_;
  bool kube_reset_ = false;
  bool kube_found_ = false;
  std::optional<std::string> payload_;  // the valid ConfigMap payload in force
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
