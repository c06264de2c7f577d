#include "daemon/config_sources.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>

#include <spdlog/spdlog.h>

#include "config/loader.h"
#include "config/state_dir.h"
#include "daemon/config_file_watch.h"
#include "kube/config_watch.h"
#include "util/log.h"

namespace shim::daemon {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

void LogRegistries(const config::Config& config) {
  for (size_t i = 0; i < config.registries.size(); ++i) {
    const auto& r = config.registries[i];
    spdlog::info("registry index={} address={} auth={}", i, r.address,
                 r.auth.empty() ? "anonymous" : config::Masked(r.auth));
  }
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

StartupConfig ResolveAtStart(const std::string& config_path, bool announce) {
  StartupConfig out;
  config::ConfigInputs inputs;
  inputs.file_path = config_path;
  std::optional<std::string> text = ConfigFileWatch::Read(config_path, &inputs.file_error);
  if (text) inputs.file_text = *text;
  // The file alone names the state directory and the ConfigMap (node keys).
  config::LoadResult node =
      config::ParseConfig(inputs.file_text, config_path, config::ParseOptions{.partial = true});
  if (text && node.ok() && node.config->kube.enabled && !node.config->state_dir.empty()) {
    StatusOr<std::optional<config::ConfigMapInput>> saved =
        config::LoadConfigMapStateFor(node.config->state_dir, node.config->kube);
    if (!saved.ok()) {
      spdlog::warn("saved ConfigMap state ignored error={}", log::Quoted(saved.status().message()));
    } else if (*saved) {
      inputs.configmap = **saved;
      config::Resolved merged = config::Resolve(inputs);
      if (merged.ok()) {
        if (announce) {
          spdlog::info(
              "serving the last synced ConfigMap from the state directory until the API server "
              "answers configmap={} state_dir={}",
              (*saved)->Describe(), node.config->state_dir);
        }
        out.resolved = std::move(merged);
        out.configmap = std::move(inputs.configmap);
        return out;
      }
      for (const auto& e : merged.errors) {
        spdlog::warn(
            "the saved ConfigMap does not apply to the current file; the file alone "
            "serves error={}",
            log::Quoted(e));
      }
      inputs.configmap.reset();
    }
  }
  out.resolved = config::Resolve(inputs);
  return out;
}

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
  explicit Worker(ConfigSources& owner)
      : owner_(owner), path_(owner.options_.config_path), file_(path_) {
    running_ = owner_.store_.Get();
    time_scale_ = TimeScale(owner_.options_.kube_time_scale);
    received_ = owner_.options_.initial_configmap;
    accepted_ = owner_.options_.initial_configmap;
    applied_.file_path = path_;
    applied_.configmap = accepted_;
  }

  void Run() {
    next_interval_ = Clock::now() + running_->reload_interval;
    // The daemon resolved the file just before; a change since then is a reload.
    ReadFile();
    config::ConfigInputs now = Inputs(received_);
    config::Resolved check = config::Resolve(now);
    if (check.ok() && *check.config == *running_) {
      applied_ = now;
    } else {
      Apply(ReloadSource::kFile);
    }
    StartKube();

    // One loop for everything: the file, SIGHUP, and the API (the ConfigMap's watch and those
    // of the Secrets it names, multiplexed on one client).
    while (!owner_.stopping_) {
      ServeEvents();
      if (owner_.stopping_) break;
      if (kube_restart_) StartKube();
      std::vector<int> fds = {owner_.wake_fd_};
      if (file_.fd() >= 0) fds.push_back(file_.fd());
      if (kube_ && kube_->active()) {
        kube_->Poll(NextWait(), fds);
        CopyKubeStatus();
      } else {
        std::vector<pollfd> polls;
        for (int fd : fds) polls.push_back({fd, POLLIN, 0});
        ::poll(polls.data(), polls.size(), static_cast<int>(NextWait().count()));
      }
    }
  }

 private:
  std::chrono::milliseconds NextWait() const {
    auto next = next_interval_;
    if (file_.due()) next = std::min(next, *file_.due());
    if (kube_) {
      if (auto due = kube_->NextDue()) next = std::min(next, *due);
    }
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()) + 1ms;
    return std::clamp(wait, 0ms, std::chrono::milliseconds(60000));
  }

  void ServeEvents() {
    file_.Drain();
    uint64_t count;
    while (::read(owner_.wake_fd_, &count, sizeof count) == sizeof count) {
    }
    if (owner_.stopping_) return;
    if (owner_.reload_requested_.exchange(false)) {
      spdlog::info(
          "SIGHUP: re-reading the configuration file, the ConfigMap and the Secrets it names "
          "path={}",
          path_);
      ReadFile();
      Apply(ReloadSource::kSignal);
      kube_restart_ = true;  // one read of each, then the watches go on
      if (owner_.options_.on_requested_reload_done) owner_.options_.on_requested_reload_done();
    }
    auto now = Clock::now();
    if (file_.TakeDue(now)) {
      ReadFile();
      Apply(ReloadSource::kFile);
    }
    if (now >= next_interval_) {
      ReadFile();
      Apply(ReloadSource::kInterval);
      next_interval_ = Clock::now() + running_->reload_interval;
    }
  }

  void ReadFile() {
    file_error_.clear();
    std::optional<std::string> text = ConfigFileWatch::Read(path_, &file_error_);
    file_text_ = text.value_or("");
  }

  config::ConfigInputs Inputs(const std::optional<config::ConfigMapInput>& configmap) const {
    return config::ConfigInputs{.file_path = path_,
                                .file_text = file_text_,
                                .file_error = file_error_,
                                .configmap = configmap};
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

  // Resolves the inputs and publishes the result: first with the ConfigMap input received last,
  // then, if that fails and differs, with the one applied before (a bad ConfigMap never
  // replaces a good one, and a file edit still applies beside the good one). Inputs judged
  // before are not judged again, unless an operator asked (SIGHUP).
  void Apply(ReloadSource source) {
    bool forced = source == ReloadSource::kSignal;
    std::vector<std::optional<config::ConfigMapInput>> tries = {received_};
    if (received_ != accepted_) tries.push_back(accepted_);
    for (size_t i = 0; i < tries.size(); ++i) {
      config::ConfigInputs inputs = Inputs(tries[i]);
      if (!forced && inputs == applied_) return;
      bool judged = std::find(rejected_.begin(), rejected_.end(), inputs) != rejected_.end();
      if (judged && !forced) continue;
      config::Resolved resolved = config::Resolve(inputs);
      if (!judged || forced) {
        for (const auto& w : resolved.warnings) spdlog::warn("config warning: {}", w);
      }
      if (resolved.ok()) {
        Publish(source, inputs, resolved.config);
        return;
      }
      if (i == 0 && tries.size() > 1 && received_) {
        spdlog::error("ConfigMap payload rejected; the last good one stays in force configmap={}",
                      received_->Describe());
      }
      for (const auto& e : resolved.errors) {
        spdlog::error("config reload rejected, the running configuration stays source={} error={}",
                      ReloadSourceName(source), log::Quoted(e));
      }
      Count(source, false);
      rejected_.push_back(inputs);
      if (rejected_.size() > 4) rejected_.erase(rejected_.begin());
    }
  }

  // Publishes `next` (keeping the running sockets: they cannot change without a restart) and
  // keeps the ConfigMap input it was made with under the state directory.
  void Publish(ReloadSource source, const config::ConfigInputs& inputs,
               const config::ConfigPtr& next) {
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
    bool kube_changed = copy->kube != running_->kube;
    bool state_dir_changed = copy->state_dir != running_->state_dir;
    running_ = copy;
    applied_ = inputs;
    rejected_.clear();
    // Kept before it serves: once a pull sees this configuration, a restart finds it too.
    if (inputs.configmap != accepted_ || state_dir_changed) {
      accepted_ = inputs.configmap;
      Save();
      KeepWatchingAccepted();
    }
    owner_.store_.Swap(copy);
    log::SetDebug(copy->debug || owner_.options_.force_debug);
    next_interval_ = std::min(next_interval_, Clock::now() + copy->reload_interval);
    spdlog::info("config reloaded source={} path={} configmap={} registries={} debug={}",
                 ReloadSourceName(source), path_,
                 inputs.configmap ? inputs.configmap->Describe() : "none", copy->registries.size(),
                 copy->debug);
    LogRegistries(*copy);
    Count(source, true);
    if (owner_.options_.on_published) owner_.options_.on_published();
    if (kube_changed) {
      // Another ConfigMap (or none): what was received for the old one no longer applies.
      received_.reset();
      kube_restart_ = true;
    }
  }

  void Save() {
    const std::string& dir = running_->state_dir;
    if (dir.empty()) return;
    Status status =
        accepted_ ? config::SaveConfigMapState(dir, *accepted_) : config::ClearConfigMapState(dir);
    if (!status.ok()) {
      // Serving goes on; only a restart without the API server loses the ConfigMap.
      spdlog::error("cannot keep the ConfigMap state for restarts error={}",
                    log::Quoted(status.message()));
    } else if (accepted_) {
      spdlog::info("ConfigMap state kept for restarts path={}/{} mode=0600", dir,
                   config::kConfigMapStateFile);
    }
  }

  void OnKubeInput(const std::optional<config::ConfigMapInput>& input) {
    CopyKubeStatus();  // the state that delivered it is in the stats before it is published
    received_ = input;
    Apply(ReloadSource::kConfigMap);
  }

  // The Secrets of the input in force stay watched while a newer payload that does not name them
  // is rejected.
  void KeepWatchingAccepted() {
    if (!kube_) return;
    std::set<std::string> names;
    if (accepted_) {
      for (const auto& [name, content] : accepted_->secrets) names.insert(name);
    }
    kube_->KeepWatching(std::move(names));
  }

  // A Secret named by the input in force changed while a newer payload is not in force: the
  // input in force takes the new content if it still resolves (a rotation), and applies.
  void OnKubeSecret(const std::string& name, const config::DockerConfig& content) {
    if (!accepted_ || received_ == accepted_) return;  // the watch's own input carries it
    auto it = accepted_->secrets.find(name);
    if (it == accepted_->secrets.end() || it->second == content) return;
    config::ConfigMapInput rotated = *accepted_;
    rotated.secrets[name] = content;
    if (!config::Resolve(Inputs(rotated)).ok()) return;  // the last good content stays
    spdlog::info("Secret of the ConfigMap in force changed; applying it secret={}/{}",
                 rotated.namespace_, name);
    accepted_ = std::move(rotated);
    Save();
    Apply(ReloadSource::kConfigMap);
  }

  void CopyKubeStatus() {
    const kube::ConfigWatchStatus& status = kube_->status();
    std::lock_guard lock(owner_.stats_mutex_);
    owner_.stats_.sync_state = status.sync_state;
    owner_.stats_.credentials = status.credentials;
    owner_.stats_.secret_states = status.secret_states;
    owner_.stats_.last_sync_ok = status.last_sync_ok;
  }

  // (Re)starts the ConfigMap watch for the configuration in force. What it received before
  // stays in force until it answers again.
  void StartKube() {
    kube_restart_ = false;
    kube_.reset();
    kube_ = std::make_unique<kube::ConfigMapWatch>(
        running_->kube, owner_.options_.discovery, time_scale_,
        [this](const std::optional<config::ConfigMapInput>& input) { OnKubeInput(input); });
    kube_->set_on_secret([this](const std::string& name, const config::DockerConfig& content) {
      OnKubeSecret(name, content);
    });
    KeepWatchingAccepted();
    CopyKubeStatus();
    if (!running_->kube.enabled && received_) {
      // The sync was turned off: the file alone. (Without credentials, what was synced last
      // keeps serving, as while the API server is unreachable.)
      received_.reset();
      Apply(ReloadSource::kConfigMap);
    }
  }

  ConfigSources& owner_;
  std::string path_;
  ConfigFileWatch file_;
  double time_scale_ = 1.0;
  config::ConfigPtr running_;  // the last configuration published (or the initial one)
  std::string restart_warned_;
  Clock::time_point next_interval_;

  std::string file_text_;                           // the file as last read
  std::string file_error_;                          // why it could not be read
  std::optional<config::ConfigMapInput> received_;  // the ConfigMap's latest input
  std::optional<config::ConfigMapInput> accepted_;  // the one in force (and saved)
  config::ConfigInputs applied_;                    // the inputs behind running_
  std::vector<config::ConfigInputs> rejected_;      // judged and rejected since the last publish

  std::unique_ptr<kube::ConfigMapWatch> kube_;
  bool kube_restart_ = false;
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
