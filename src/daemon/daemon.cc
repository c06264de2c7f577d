#include "daemon/daemon.h"

#include <grp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <ostream>
#include <thread>

#include <spdlog/spdlog.h>

#include "config/loader.h"
#include "config/store.h"
#include "cri/image_service.h"
#include "cri/pre_pull.h"
#include "cri_image.pb.h"
#include "daemon/config_sources.h"
#include "daemon/http_endpoint.h"
#include "daemon/instance_lock.h"
#include "daemon/metrics.h"
#include "daemon/prometheus_text.h"
#include "daemon/startup_pages.h"
#include "daemon/systemd_notify.h"
#include "registry/health.h"
#include "registry/prober.h"
#include "relay/event_loop.h"
#include "relay/relay_server.h"
#include "relay/unary_call.h"
#include "relay/unix_socket.h"
#include "util/log.h"

namespace shim::daemon {

namespace {

using namespace std::chrono_literals;

// How long calls in flight may run on after SIGTERM before they are reset.
constexpr auto kShutdownGrace = 5s;
constexpr auto kReleaseStartupPagesAfter = 2s;
constexpr int kReleaseStartupPagesTries = 5;

// Releases the pages only start-up touched (startup_pages.h) after kReleaseStartupPagesAfter;
// when that cannot be done then (out of descriptors, say), tries again as often as `tries` says.
void ScheduleStartupPagesRelease(relay::EventLoop& loop, int tries) {
  loop.AddTimer(kReleaseStartupPagesAfter, [&loop, tries] {
    ReleasedPages released = ReleaseStartupPages();
    if (released.error.empty()) {
      spdlog::info("start-up pages released mappings={} resident_kib={}", released.mappings,
                   released.kib);
    } else if (tries > 1) {
      spdlog::debug("start-up pages not released yet error=\"{}\"", released.error);
      ScheduleStartupPagesRelease(loop, tries - 1);
    } else {
      spdlog::info("start-up pages kept error=\"{}\"", released.error);
    }
  });
}

// Every kubelet connection, runtime connection and registry probe holds a descriptor, and the
// usual soft limit (1024) is a convention for select(), which nothing here uses. The hard limit
// is what the administrator (or systemd's LimitNOFILE) allows.
void RaiseDescriptorLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
  rlim_t previous = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) == 0) {
    spdlog::debug("descriptor limit raised from={} to={}", previous, limit.rlim_cur);
  }
}

// The socket's directory exists, a stale socket from a crashed run is gone, and the path is
// free to bind. Refuses to remove anything that is not a socket.
Status PrepareSocketPath(const std::string& path) {
  std::error_code ec;
  auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) {
    std::filesystem::create_directories(dir, ec);
    if (ec) return Status::Error("cannot create " + dir.string() + ": " + ec.message());
  }
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Status::Error(path +
                           " exists and is not a socket; remove it or choose another "
                           "`shim` path");
    }
    if (unlink(path.c_str()) != 0) {
      return Status::Error("cannot remove stale socket " + path + ": " + std::strerror(errno));
    }
  }
  return Status::Ok();
}

// Mode 0660 and the group of the runtime's socket: whoever may talk to the runtime may talk to
// the shim, nobody else.
void RestrictSocket(const std::string& path, const std::string& runtime_socket) {
  if (chmod(path.c_str(), 0660) != 0) {
    spdlog::warn("cannot chmod socket path={} error=\"{}\"", path, std::strerror(errno));
  }
  struct stat st;
  if (stat(runtime_socket.c_str(), &st) == 0) {
    if (chown(path.c_str(), static_cast<uid_t>(-1), st.st_gid) != 0) {
      spdlog::warn("cannot chown socket path={} gid={} error=\"{}\"", path, st.st_gid,
                   std::strerror(errno));
    }
  }
}

void LogConfig(const config::Config& config) {
  for (size_t i = 0; i < config.registries.size(); ++i) {
    const auto& r = config.registries[i];
    spdlog::info("registry index={} address={} auth={}{}", i, r.address,
                 r.auth.empty() ? "anonymous" : config::Masked(r.auth),
                 r.prefixes.empty() ? "" : fmt::format(" prefixes={}", fmt::join(r.prefixes, ",")));
    if (r.insecure_skip_verify) {
      spdlog::warn("TLS verification is off for this registry when probing it address={}",
                   r.address);
    }
  }
}

// Registry health and configuration state, rendered from their owners at scrape time.
void AddStateCollectors(Metrics& metrics, const config::ConfigStore& store,
                        const registry::RegistryHealth& health, const ConfigSources& sources) {
  metrics.AddCollector([&store, &health](std::string& out) {
    PrometheusText text(out);
    text.Family("image_cri_shim_registry_up", "gauge",
                "1 unless pulls found the registry down and no probe has seen it answer since.");
    // Held for the loop: a reload may drop the store's reference while this thread reads.
    config::ConfigPtr config = store.Get();
    for (const auto& r : config->registries) {
      text.Sample("image_cri_shim_registry_up", {{"registry", r.address}},
                  health.IsDown(r.address) ? 0 : 1);
    }
  });
  metrics.AddCollector([&sources](std::string& out) {
    PrometheusText text(out);
    ConfigSourceStats stats = sources.stats();
    text.Family("image_cri_shim_config_reloads_total", "counter",
                "Configuration reloads, by source and result (failed: rejected, the previous one "
                "kept serving).");
    for (size_t i = 0; i < kReloadSourceCount; ++i) {
      const char* source = ReloadSourceName(static_cast<ReloadSource>(i));
      text.Sample("image_cri_shim_config_reloads_total", {{"source", source}, {"result", "ok"}},
                  stats.reloads_ok[i]);
      text.Sample("image_cri_shim_config_reloads_total", {{"source", source}, {"result", "failed"}},
                  stats.reloads_failed[i]);
    }
    text.Family("image_cri_shim_configmap_sync_state", "gauge",
                "The ConfigMap sync's current state.");
    text.Sample("image_cri_shim_configmap_sync_state", {{"state", stats.sync_state}}, 1);
    if (!stats.secret_states.empty()) {
      text.Family("image_cri_shim_secret_sync_state", "gauge",
                  "The sync state of each Secret the ConfigMap names (authSecret).");
      for (const auto& [secret, state] : stats.secret_states) {
        text.Sample("image_cri_shim_secret_sync_state", {{"secret", secret}, {"state", state}}, 1);
      }
    }
    auto seconds = [](std::chrono::system_clock::time_point t) {
      return std::chrono::duration<double>(t.time_since_epoch()).count();
    };
    if (stats.last_sync_ok) {
      text.Family("image_cri_shim_configmap_last_sync_timestamp_seconds", "gauge",
                  "When the ConfigMap was last read or watched successfully.");
      text.Sample("image_cri_shim_configmap_last_sync_timestamp_seconds", {},
                  seconds(*stats.last_sync_ok));
    }
    if (stats.last_reload_ok) {
      text.Family("image_cri_shim_config_last_reload_timestamp_seconds", "gauge",
                  "When a new configuration last took effect.");
      text.Sample("image_cri_shim_config_last_reload_timestamp_seconds", {},
                  seconds(*stats.last_reload_ok));
    }
  });
}

// Whether the runtime's socket takes connections, refreshed on the loop every few seconds (a
// unix connect, no call), for the runtime_reachable gauge.
void WatchRuntime(relay::EventLoop& loop, relay::RelayServer& server, Metrics& metrics) {
  auto check = std::make_shared<std::function<void()>>();
  *check = [&loop, &server, &metrics, weak = std::weak_ptr(check)] {
    std::string error;
    metrics.SetRuntimeReachable(server.upstream().Get(&error) != nullptr);
    if (auto again = weak.lock()) loop.AddTimer(5s, [again] { (*again)(); });
  };
  loop.AddTimer(0ms, [check] { (*check)(); });
}

// /readyz: asks the runtime for its Version through the loop and waits for the answer. Runs on
// the endpoint's thread.
bool RuntimeAnswers(relay::EventLoop& loop, relay::RelayServer& server, std::string* why) {
  auto answer = std::make_shared<std::promise<relay::UnaryResult>>();
  auto future = answer->get_future();
  loop.Post([&loop, &server, answer] {
    imagecrishim::cri::VersionRequest request;
    relay::UnaryCall::Start(loop, server.upstream(),
                            relay::UnaryCall::OwnHeaders("/runtime.v1.RuntimeService/Version"),
                            relay::FrameMessage(request.SerializeAsString()),
                            [answer](relay::UnaryResult r) { answer->set_value(std::move(r)); });
  });
  if (future.wait_for(3s) != std::future_status::ready) {
    *why = "the runtime did not answer Version within 3s";
    return false;
  }
  relay::UnaryResult result = future.get();
  if (!result.answered) {
    *why = result.message;
    return false;
  }
  return true;  // any gRPC status means the runtime is there and serving
}

}  // namespace

int Run(const Options& options) {
  log::Init(options.debug);
  // The file, with the ConfigMap last synced (kept under stateDir) when there is one.
  StartupConfig startup = ResolveAtStart(options.config_path);
  config::Resolved& loaded = startup.resolved;
  for (const auto& w : loaded.warnings) spdlog::warn("config warning: {}", w);
  if (!loaded.ok()) {
    for (const auto& e : loaded.errors) spdlog::error("config error: {}", e);
    return 2;
  }
  log::SetDebug(options.debug || loaded.config->debug);
  config::ConfigStore store(loaded.config);
  const config::Config& config = *loaded.config;

  RaiseDescriptorLimit();

  // Signals arrive through a signalfd on the loop, never as handlers: blocked in every thread.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  struct stat st;
  if (!config.force && stat(config.cri_socket.c_str(), &st) != 0) {
    spdlog::error(
        "the runtime socket {} does not exist ({}); start the runtime first, fix `cri`, "
        "or set `force: true` to serve anyway",
        config.cri_socket, std::strerror(errno));
    return 1;
  }

  InstanceLock lock;
  auto dir = std::filesystem::path(config.shim_socket).parent_path();
  std::error_code ec;
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  if (Status s = lock.Acquire(config.shim_socket + ".lock"); !s.ok()) {
    spdlog::error("{}", s.message());
    return 1;
  }
  if (Status s = PrepareSocketPath(config.shim_socket); !s.ok()) {
    spdlog::error("{}", s.message());
    return 1;
  }

  relay::EventLoop loop;
  registry::SystemClock clock;
  registry::RegistryHealth health(clock);
  health.set_listener([](const std::string& registry, bool up, const std::string& reason) {
    if (up) {
      spdlog::info("registry is back up registry={}; pulls go to it again", registry);
    } else {
      spdlog::warn(
          "registry marked down, it goes last until a probe sees it answer registry={} "
          "reason={}",
          registry, log::Quoted(reason));
    }
  });
  registry::Prober prober(health, store);
  prober.Start();
  Metrics metrics;
  cri::ImageService images([&store] { return store.Get(); }, &health, &metrics);
  relay::RelayServer server(loop, config.cri_socket, &images, &metrics);
  std::string error;
  if (server.upstream().Get(&error) == nullptr) {
    spdlog::warn(
        "runtime not reachable yet; calls fail with UNAVAILABLE until it is "
        "error=\"{}\"",
        error);
  }

  // prePull runs on the loop, after the socket serves: it never delays serving or readiness.
  cri::PrePuller pre_pull(images, loop, server.upstream(), [&store] { return store.Get(); });
  // Reloads read files and talk to the API server: on the sources' own thread, never the loop.
  ConfigSources sources(
      {.config_path = options.config_path,
       .initial_configmap = startup.configmap,
       .force_debug = options.debug,
       .on_requested_reload_done = [&loop] { loop.Post([] { NotifySystemd("READY=1"); }); },
       .on_published =
           [&loop, &images, &server, &pre_pull] {
             loop.Post([&loop, &images, &server, &pre_pull] {
               images.OnConfigChanged(loop, server.upstream());
               pre_pull.OnConfigChanged();
             });
           }},
      store);
  AddStateCollectors(metrics, store, health, sources);
  WatchRuntime(loop, server, metrics);
  loop.AddTimer(0ms, [&] { images.DetectRuntime(loop, server.upstream()); });
  metrics.AddCollector([&pre_pull](std::string& out) {
    PrometheusText text(out);
    text.Family("image_cri_shim_prepull_state", "gauge",
                "Each image prePull lists, with its state (pending, present, failed) and, when "
                "failed, the reason.");
    for (const auto& status : pre_pull.Snapshot()) {
      std::string state(cri::PrePuller::StateName(status.state));
      if (status.reason.empty()) {
        text.Sample("image_cri_shim_prepull_state", {{"image", status.image}, {"state", state}}, 1);
      } else {
        text.Sample("image_cri_shim_prepull_state",
                    {{"image", status.image}, {"state", state}, {"reason", status.reason}}, 1);
      }
    }
  });
  HttpEndpoint endpoint;
  if (!config.metrics.address.empty()) {
    Status s = endpoint.Start(
        config.metrics.address,
        {.metrics = [&metrics] { return metrics.Render(); },
         .ready = [&](std::string* why) { return RuntimeAnswers(loop, server, why); }});
    if (s.ok()) {
      spdlog::info("metrics and health endpoint address=http://{}", config.metrics.address);
    } else {
      spdlog::error("{}; serving CRI without it", s.message());
    }
  }
  // The CRI socket opens last: once it accepts connections, the metrics and health endpoint
  // is up too, so whatever waits for the socket (systemd ordering, a test) sees a whole shim.
  auto listen_fd = relay::ListenUnix(config.shim_socket);
  if (!listen_fd.ok()) {
    spdlog::error("cannot serve: {}", listen_fd.status().message());
    return 1;
  }
  RestrictSocket(config.shim_socket, config.cri_socket);
  server.Serve(*listen_fd);
  int sfd = signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
  bool stopping = false;
  loop.Add(sfd, EPOLLIN, [&](uint32_t) {
    signalfd_siginfo info;
    while (read(sfd, &info, sizeof info) == sizeof info) {
      if (info.ssi_signo == SIGHUP) {
        NotifySystemd("RELOADING=1");
        sources.RequestReload();
      } else if (!stopping) {
        stopping = true;
        spdlog::info("{}: stopping; calls in flight have {}s to finish",
                     strsignal(static_cast<int>(info.ssi_signo)),
                     std::chrono::duration_cast<std::chrono::seconds>(kShutdownGrace).count());
        NotifySystemd("STOPPING=1");
        server.Shutdown(kShutdownGrace, [&] { loop.Stop(); });
      }
    }
  });

  spdlog::info("serving socket={} runtime={} version={}", config.shim_socket, config.cri_socket,
               SHIM_VERSION);
  LogConfig(config);
  sources.Start();
  loop.AddTimer(0ms, [&] { pre_pull.Start(); });
  // Start-up is over by then (the first ConfigMap read and probes included, on a healthy node):
  // what only it touched need not stay mapped for the daemon's whole life (startup_pages.h).
  ScheduleStartupPagesRelease(loop, kReleaseStartupPagesTries);
  NotifySystemd("READY=1");
  loop.Run();

  loop.Remove(sfd);
  close(sfd);
  endpoint.Stop();
  prober.Stop();
  sources.Stop();
  unlink(config.shim_socket.c_str());
  close(*listen_fd);
  spdlog::info("stopped");
  return 0;
}

bool CheckRuntime(const config::Config& config, std::ostream& out) {
  relay::EventLoop loop;
  relay::UpstreamPool pool(loop, config.cri_socket);
  struct Answer {
    bool done = false;
    relay::UnaryResult result;
  };
  Answer answers[2];
  const char* versions[2] = {"v1", "v1alpha2"};
  for (int i = 0; i < 2; ++i) {
    imagecrishim::cri::VersionRequest request;
    request.set_version("0.1.0");
    auto path = std::string("/runtime.") + versions[i] + ".RuntimeService/Version";
    relay::UnaryCall::Start(loop, pool, relay::UnaryCall::OwnHeaders(path),
                            relay::FrameMessage(request.SerializeAsString()),
                            [&answers, i](relay::UnaryResult r) {
                              answers[i].done = true;
                              answers[i].result = std::move(r);
                            });
  }
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!(answers[0].done && answers[1].done) && std::chrono::steady_clock::now() < deadline) {
    loop.RunOnce(100ms);
  }
  out << "runtime: " << config.cri_socket << "\n";
  bool any = false;
  for (int i = 0; i < 2; ++i) {
    const auto& a = answers[i];
    out << "  runtime." << versions[i] << ": ";
    if (!a.done) {
      out << "no answer within 5s\n";
      continue;
    }
    imagecrishim::cri::VersionResponse response;
    auto message = a.result.Message();
    if (a.result.ok() && message &&
        response.ParseFromArray(message->data(), static_cast<int>(message->size()))) {
      any = true;
      out << "served by " << response.runtime_name() << " " << response.runtime_version()
          << " (API " << response.runtime_api_version() << ")\n";
    } else {
      out << "not served (" << relay::GrpcCodeName(a.result.code) << ": " << a.result.message
          << ")\n";
    }
  }
  if (!any) out << "error: the runtime at " << config.cri_socket << " cannot be reached\n";
  return any;
}

void CheckRegistries(const config::Config& config, std::ostream& out) {
  out << "registries:\n";
  for (const auto& registry : config.registries) {
    auto result = registry::ProbeRegistry(registry, true);
    out << "  " << registry.address << ": ";
    switch (result.state) {
      case registry::ProbeResult::State::kUp:
        out << "up";
        if (!registry.auth.empty() && result.detail.empty()) out << ", credentials accepted";
        if (!result.detail.empty()) out << " (" << result.detail << ")";
        break;
      case registry::ProbeResult::State::kDown:
        out << "down (" << result.detail << ")";
        break;
      case registry::ProbeResult::State::kCredentialsRejected:
        out << "credentials rejected (" << result.detail << ")";
        break;
    }
    out << "\n";
  }
}

}  // namespace shim::daemon
