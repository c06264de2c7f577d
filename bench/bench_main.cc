// cri-bench: what the shim costs compared with calling containerd directly (issue 7).
//
// Runs inside tests/e2e/sandbox.sh (bench/run.sh, `make bench`). Starts, on temporary paths, a
// TLS registry holding one small image (library/nginx:latest), a private containerd and the
// shim (default logging, the registry as `address`), pulls nginx:latest through the shim as
// kubelet would, and then measures in one run:
//   - start to ready: exec until the socket accepts, and until a first Version is answered
//     (containerd already up), median of several starts;
//   - resident memory: idle after start, after N mixed calls, after N more (growth between);
//     idle while watching the ConfigMap over TLS (a second shim, with a Kubernetes API test
//     server); after floods of concurrent calls and once idle again; binary and .deb size;
//   - latency (p50, p99) and calls per second of each method at each number of callers, on the
//     direct socket and on the shim's, in interleaved rounds (direct, shim, shim, direct, ...)
//     so that drift hits both alike; the shim's CPU time and context switches per call;
//   - how many runtime calls one ImageStatus by kubelet's name costs (counted in the trace log of
//     a second, separate containerd, so the timed one runs at its normal log level).
// Prints a table; --markdown PATH writes the same as markdown. Exits non-zero when a call
// failed or a figure is not sane (a benchmark of failing calls measures nothing).
#include <sys/utsname.h>
#include <unistd.h>

#include <dirent.h>
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <latch>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench_client.h"
#include "containerd.h"
#include "cri_image.pb.h"
#include "cri_runtime_test.pb.h"
#include "memory_scenarios.h"
#include "proc_stats.h"
#include "registry.h"
#include "shim_process.h"
#include "subprocess.h"
#include "temp_dir.h"
#include "test_ca.h"
#include "test_image.h"
#include "test_util.h"

namespace shim::bench {
namespace {

using namespace shim::testing;
using Clock = std::chrono::steady_clock;
namespace cri = ::imagecrishim::cri;
namespace crit = ::imagecrishim::cri::test;

// --- options -----------------------------------------------------------------------------

struct Options {
  std::string shim_binary;
  std::string pipe_binary;  // cri-byte-pipe: the floor; "" = no floor rows
  long calls = 20000;       // per target, per method and number of callers
  double duration = 0;      // seconds per target per measurement; > 0 replaces `calls`
  int rounds = 10;          // interleaved rounds each measurement is split into
  long warmup = 500;        // calls per target before each measurement
  std::vector<std::string> methods = {"Version", "ListContainers", "ImageStatus", "ListImages"};
  std::vector<int> callers = {1, 8};
  long memory_calls = 100000;  // per memory round (two rounds)
  int memory_callers = 8;
  int starts = 7;
  long count_calls = 1000;  // ImageStatus calls for counting runtime calls; 0 = skip
  int bursts = 3;           // floods of concurrent calls after the latency runs; 0 = skip
  int burst_connections = 20;
  int burst_calls = 2000;
  int burst_idle_ms = 5000;  // how long the shim idles before its memory is read again
  bool configmap = true;     // the idle figure of a shim watching its ConfigMap over TLS
  std::string deb;           // the built package, for its size ("" = not reported)
  std::string markdown;
  bool quick = false;
  std::string command_line;
};

// How long after its start (or after its ConfigMap watch opened) a shim counts as idle.
constexpr int kIdleSettleMs = 3000;

const std::vector<std::string> kKnownMethods = {"Version", "ListContainers", "ImageStatus",
                                                "ListImages", "ImageStatusStored"};

// --- targets and methods -----------------------------------------------------------------

struct Method {
  std::string name;
  std::string path;
  std::string direct_request;
  std::string shim_request;
  std::string note;
};

struct Target {
  std::string name;  // "direct" or "shim"
  pid_t pid = 0;     // the process serving it (its CPU is sampled)
  std::unique_ptr<BenchChannel> channel;
  std::vector<std::unique_ptr<BenchCaller>> callers;

  Target(std::string n, const std::string& socket, int max_callers) : name(std::move(n)) {
    channel = std::make_unique<BenchChannel>(socket);
    for (int i = 0; i < max_callers; ++i)
      callers.push_back(std::make_unique<BenchCaller>(*channel));
  }
};

// --- running calls -----------------------------------------------------------------------

struct BlockResult {
  std::vector<float> latencies_us;
  double wall_s = 0;
  long calls = 0;
  long errors = 0;
  long odd_sizes = 0;  // answers whose size differs from the first one seen in warm-up
  std::string first_error;
};

// `callers` threads share the target's channel; each makes calls until `calls` are made in
// total (or, with seconds > 0, until the time is up). Per call, `pick(caller, k)` chooses the
// method index. Wall time runs from the release of the ready threads to the last answer.
BlockResult RunBlock(Target& target, const std::vector<const Method*>& methods, bool shim_side,
                     int callers, long calls, double seconds,
                     const std::vector<size_t>& expected_sizes) {
  BlockResult result;
  std::atomic<long> next{0};
  std::vector<BlockResult> per_thread(callers);
  std::latch ready(callers);
  std::latch go(1);
  Clock::time_point deadline;
  std::vector<std::thread> threads;
  for (int c = 0; c < callers; ++c) {
    threads.emplace_back([&, c] {
      auto& mine = per_thread[c];
      if (seconds <= 0) mine.latencies_us.reserve(calls / callers + 2);
      BenchCaller& caller = *target.callers[c];
      ready.count_down();
      go.wait();
      for (;;) {
        long index = 0;
        if (seconds > 0) {
          if (Clock::now() >= deadline) break;
          index = next.fetch_add(1, std::memory_order_relaxed);
        } else {
          index = next.fetch_add(1, std::memory_order_relaxed);
          if (index >= calls) break;
        }
        size_t m = methods.size() == 1 ? 0 : static_cast<size_t>(index % methods.size());
        const Method& method = *methods[m];
        const std::string& request = shim_side ? method.shim_request : method.direct_request;
        auto start = Clock::now();
        CallResult call = caller.Call(method.path, request);
        auto end = Clock::now();
        mine.latencies_us.push_back(std::chrono::duration<float, std::micro>(end - start).count());
        if (!call.ok) {
          if (mine.errors++ == 0) mine.first_error = method.name + ": " + call.error;
        } else if (!expected_sizes.empty() && call.response_bytes != expected_sizes[m]) {
          ++mine.odd_sizes;
        }
      }
    });
  }
  ready.wait();
  auto start = Clock::now();
  deadline = start + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(seconds > 0 ? seconds : 0));
  go.count_down();
  for (auto& t : threads) t.join();
  result.wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  for (auto& mine : per_thread) {
    result.latencies_us.insert(result.latencies_us.end(), mine.latencies_us.begin(),
                               mine.latencies_us.end());
    result.errors += mine.errors;
    result.odd_sizes += mine.odd_sizes;
    if (result.first_error.empty()) result.first_error = mine.first_error;
  }
  result.calls = static_cast<long>(result.latencies_us.size());
  return result;
}

struct Side {
  std::vector<float> latencies_us;
  double wall_s = 0;
  long calls = 0;
  long errors = 0;
  long odd_sizes = 0;
  std::string first_error;
  long long ticks = 0, sched_ns = 0, switches = 0;  // of the shim, over this side's blocks
  long long runtime_ticks = 0;                      // of containerd, over this side's blocks
  double p50 = 0, p99 = 0, cps = 0;

  void Add(BlockResult&& block) {
    latencies_us.insert(latencies_us.end(), block.latencies_us.begin(), block.latencies_us.end());
    wall_s += block.wall_s;
    calls += block.calls;
    errors += block.errors;
    odd_sizes += block.odd_sizes;
    if (first_error.empty()) first_error = block.first_error;
  }
  void Finish() {
    if (latencies_us.empty()) return;
    std::sort(latencies_us.begin(), latencies_us.end());
    auto at = [&](double q) {
      size_t i = static_cast<size_t>(std::ceil(q * latencies_us.size()));
      return latencies_us[std::min(latencies_us.size() - 1, i == 0 ? 0 : i - 1)];
    };
    p50 = at(0.50);
    p99 = at(0.99);
    cps = wall_s > 0 ? calls / wall_s : 0;
  }
};

struct Measurement {
  std::string method;
  int callers = 0;
  Side direct, shim;
  Side pipe;  // the byte pipe in the shim's place (the floor); calls == 0 when not measured
};

double TickUs() {
  return 1e6 / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// --- output helpers ----------------------------------------------------------------------

std::string Fixed(double value, int decimals) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(decimals) << value;
  return s.str();
}

std::string Pad(const std::string& text, size_t width, bool left = false) {
  if (text.size() >= width) return text;
  return left ? text + std::string(width - text.size(), ' ')
              : std::string(width - text.size(), ' ') + text;
}

void Progress(const std::string& text) {
  std::cerr << "cri-bench: " << text << "\n" << std::flush;
}

// --- the run -----------------------------------------------------------------------------

struct StartTimes {
  std::vector<double> accept_ms, ready_ms;
  double accept_median = 0, ready_median = 0, ready_max = 0;
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

struct CountResult {
  bool done = false;
  std::string skipped_why;
  double direct_per_request = 0;      // stored name straight to containerd (method check: 1)
  double remembered_per_request = 0;  // through the shim after a pull through it
  double restarted_per_request = 0;   // through the shim after it restarted (nothing remembered)
  std::string layout;                 // the registries of that shim, for the note
};

struct Report {
  std::vector<Measurement> measurements;
  StartTimes starts;
  long long rss_idle = 0, rss_after_pull = 0, rss_round1 = 0, rss_round2 = 0, rss_end = 0;
  ProcessMemory idle_memory, end_memory;
  ConfigMapIdle configmap;  // memory.rss < 0: not measured
  BurstMemory burst;        // after.empty(): not measured
  long long binary_bytes = -1, stripped_bytes = -1, deb_bytes = -1;
  int libraries = -1;  // shared libraries the binary loads (ldd, the vdso left out)
  long memory_calls = 0;
  double memory_cps = 0;
  long memory_errors = 0;
  std::string memory_first_error;
  CountResult count;
  std::string image_id, stored_name, kubelet_name;
  std::string machine_cpu, kernel, containerd_version, shim_version;
  unsigned cores = 0;
  double total_s = 0;
  long total_shim_calls = 0;
  // During the latency measurements: how busy the machine was, and how much of that was
  // neither the benchmark, nor the shim, nor containerd (other work skews the figures).
  double machine_busy_pct = 0, foreign_busy_pct = 0;
  std::string loadavg;
};

// Counts the ImageStatus requests containerd logged at trace level.
long CountStatusLines(const Containerd& containerd) {
  std::istringstream log(containerd.LogText());
  std::string line;
  long count = 0;
  while (std::getline(log, line)) {
    if (line.find("ImageStatus for ") != std::string::npos &&
        line.find("returns image status") == std::string::npos &&
        line.find(" failed") == std::string::npos) {
      ++count;
    }
  }
  return count;
}

// Runs `calls` ImageStatus calls of `name` on `socket` and returns how many requests containerd
// logged meanwhile, per call.
// The first name containerd lists the image `image_id` under on `socket` (kubelet's with
// `imageNames: requested`, the registry's otherwise).
std::string HeldName(const std::string& socket, const std::string& image_id) {
  BenchChannel channel(socket);
  BenchCaller caller(channel);
  cri::ImageStatusRequest request;
  request.mutable_image()->set_image(image_id);
  std::string answer;
  cri::ImageStatusResponse response;
  CallResult r =
      caller.Call("/runtime.v1.ImageService/ImageStatus", request.SerializeAsString(), &answer);
  if (!r.ok || !response.ParseFromString(answer) || response.image().repo_tags().empty()) {
    throw std::runtime_error("containerd on " + socket + " does not hold the image " + image_id);
  }
  return response.image().repo_tags(0);
}

double RuntimeCallsPerStatus(const Containerd& containerd, const std::string& socket,
                             const std::string& name, long calls, const std::string& image_id) {
  BenchChannel channel(socket);
  BenchCaller caller(channel);
  cri::ImageStatusRequest request;
  request.mutable_image()->set_image(name);
  std::string bytes = request.SerializeAsString();
  std::string path = "/runtime.v1.ImageService/ImageStatus";
  // One call first so that the connection (and any lazy work) is not counted.
  std::string answer;
  CallResult first = caller.Call(path, bytes, &answer);
  cri::ImageStatusResponse response;
  if (!first.ok || !response.ParseFromString(answer) || response.image().id() != image_id) {
    throw std::runtime_error("ImageStatus " + name + " on " + socket +
                             " did not answer the image (" + first.error + ")");
  }
  auto settle = [&] {  // containerd writes the line while answering; let the log catch up
    long last = -1, now = CountStatusLines(containerd);
    while (now != last) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      last = now;
      now = CountStatusLines(containerd);
    }
    return now;
  };
  long before = settle();
  for (long i = 0; i < calls; ++i) {
    CallResult r = caller.Call(path, bytes);
    if (!r.ok) throw std::runtime_error("ImageStatus " + name + " failed: " + r.error);
  }
  long after = settle();
  return static_cast<double>(after - before) / static_cast<double>(calls);
}

std::string ShimConfig(const std::string& socket, const std::string& runtime,
                       const std::vector<const Registry*>& registries, int metrics_port) {
  std::ostringstream c;
  c << "shim: " << socket << "\ncri: " << runtime << "\nstateDir: " << socket << ".state\n";
  c << "address: " << registries[0]->Address() << "\nauth: \"" << registries[0]->username() << ":"
    << registries[0]->password() << "\"\n";
  if (registries.size() > 1) {
    c << "registries:\n";
    for (size_t i = 1; i < registries.size(); ++i) {
      c << "- address: " << registries[i]->Address() << "\n  auth: \"" << registries[i]->username()
        << ":" << registries[i]->password() << "\"\n";
    }
  }
  // Defaults otherwise (debug off: the shim logs as it would in production), except what
  // cannot work here: no ConfigMap, and the metrics endpoint on a free port.
  c << "configMap:\n  enabled: false\nmetricsAddress: 127.0.0.1:" << metrics_port << "\n";
  return c.str();
}

CountResult CountRuntimeCalls(const Options& options, const Registry& registry_a,
                              const TestImage& image) {
  CountResult result;
  Progress("counting runtime calls per ImageStatus (a second containerd at log level trace)");
  Containerd traced({.log_level = "trace"});
  Registry registry_b({.host_name = "registry-b.test",
                       .username = registry_a.username(),
                       .password = registry_a.password(),
                       .port = 0});
  TempDir dir("bench-count");
  std::string socket = dir.File("shim.sock");
  std::string config = dir.File("shim.yaml");
  // registry-b first and empty, registry-a second holding the image: the pull falls over to a,
  // and a status by kubelet's name has one wrong candidate before the right one.
  WriteFile(config,
            ShimConfig(socket, traced.Socket(), {&registry_b, &registry_a}, FreeLoopbackPort()),
            0600);
  result.layout =
      "address " + registry_b.Host() + " (empty), then " + registry_a.Host() + " (holds the image)";
  ShimProcess shim({.config_path = config, .socket_path = socket, .binary = options.shim_binary});
  shim.Start();
  {
    BenchChannel channel(socket);
    BenchCaller caller(channel);
    cri::PullImageRequest pull;
    pull.mutable_image()->set_image("nginx:latest");
    CallResult pulled = caller.Call("/runtime.v1.ImageService/PullImage", pull.SerializeAsString());
    if (!pulled.ok) throw std::runtime_error("pull through the counting shim: " + pulled.error);
  }
  std::string stored = HeldName(traced.Socket(), image.image_id);
  result.direct_per_request =
      RuntimeCallsPerStatus(traced, traced.Socket(), stored, options.count_calls, image.image_id);
  result.remembered_per_request =
      RuntimeCallsPerStatus(traced, socket, "nginx:latest", options.count_calls, image.image_id);
  shim.Stop();
  shim.Start();
  result.restarted_per_request =
      RuntimeCallsPerStatus(traced, socket, "nginx:latest", options.count_calls, image.image_id);
  shim.Stop();
  result.done = true;
  return result;
}

StartTimes MeasureStarts(const Options& options, const std::string& config,
                         const std::string& socket, const Method& version) {
  StartTimes times;
  for (int i = 0; i < options.starts; ++i) {
    ShimProcess shim({.config_path = config,
                      .socket_path = socket,
                      .log_path = config + ".starts.log",
                      .binary = options.shim_binary});
    // The channel connects lazily: made before the clock starts, it connects at the first call.
    BenchChannel channel(socket);
    BenchCaller caller(channel);
    auto t0 = Clock::now();
    shim.Launch();
    while (!UnixSocketAccepts(socket)) {
      if (!shim.Running())
        throw std::runtime_error("the shim exited while starting:\n" + TailLines(shim.Log()));
      if (Clock::now() - t0 > std::chrono::seconds(20))
        throw std::runtime_error("the shim did not start within 20 s");
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    auto t1 = Clock::now();
    CallResult answered = caller.Call(version.path, version.shim_request);
    auto t2 = Clock::now();
    if (!answered.ok)
      throw std::runtime_error("first Version through the new shim: " + answered.error);
    times.accept_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    times.ready_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t0).count());
    ExitStatus stopped = shim.Stop();
    if (!stopped.Success())
      throw std::runtime_error("the shim did not stop cleanly: " + stopped.ToString());
  }
  times.accept_median = Median(times.accept_ms);
  times.ready_median = Median(times.ready_ms);
  times.ready_max =
      times.ready_ms.empty() ? 0 : *std::max_element(times.ready_ms.begin(), times.ready_ms.end());
  return times;
}

// The size of `binary` without symbols and debug information, as a package installs it.
long long StrippedSize(const std::string& binary) {
  TempDir dir("bench-strip");
  std::string copy = dir.File("stripped");
  if (!RunCommand({"strip", "-o", copy, binary}).status.Success()) return -1;
  return static_cast<long long>(std::filesystem::file_size(copy));
}

// The shared libraries `binary` loads, as ldd lists them: the dynamic loader counts, the vdso
// (no file) does not.
int CountSharedLibraries(const std::string& binary) {
  CommandResult listed = RunCommand({"ldd", binary});
  if (!listed.status.Success()) return -1;
  std::istringstream lines(listed.output);
  std::string line;
  int count = 0;
  while (std::getline(lines, line)) {
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (line.find("linux-vdso") != std::string::npos) continue;
    ++count;
  }
  return count;
}

std::string FirstLine(const std::string& text) {
  return text.substr(0, text.find('\n'));
}

std::string CpuModel() {
  std::istringstream info(ReadFileIfExists("/proc/cpuinfo"));
  std::string line;
  while (std::getline(info, line)) {
    if (line.rfind("model name", 0) == 0) {
      size_t colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(colon + 2);
    }
  }
  return "unknown";
}

// `pipe` (may be null): a byte pipe in the shim's place, measured in the same rounds.
Measurement Measure(const Options& options, Target& direct, Target& shim, Target* pipe,
                    pid_t runtime_pid, const Method& method, int callers) {
  Measurement m;
  m.method = method.name;
  m.callers = callers;
  std::vector<const Method*> one = {&method};
  // Warm-up on both sides; the sizes of the answers it sees are what every later answer must
  // have (the data does not change during the run).
  std::vector<size_t> direct_size, shim_size;
  {
    std::string answer;
    CallResult d = direct.callers[0]->Call(method.path, method.direct_request, &answer);
    CallResult s = shim.callers[0]->Call(method.path, method.shim_request, &answer);
    if (!d.ok || !s.ok) {
      throw std::runtime_error(method.name + " fails: direct " + (d.ok ? "ok" : d.error) +
                               ", shim " + (s.ok ? "ok" : s.error));
    }
    direct_size = {d.response_bytes};
    shim_size = {s.response_bytes};
  }
  RunBlock(direct, one, false, callers, options.warmup, 0, {});
  RunBlock(shim, one, true, callers, options.warmup, 0, {});
  if (pipe != nullptr) RunBlock(*pipe, one, false, callers, options.warmup, 0, {});
  long per_round = std::max(1L, options.calls / options.rounds);
  double seconds = options.duration > 0 ? options.duration / options.rounds : 0;
  // The order turns each round so that drift hits every target alike:
  // d s | s d | ... without the pipe, d s p | s p d | p d s | ... with it.
  int targets = pipe != nullptr ? 3 : 2;
  for (int round = 0; round < options.rounds; ++round) {
    for (int turn = 0; turn < targets; ++turn) {
      int which = targets == 2 ? ((round % 2 == 0) == (turn == 1) ? 1 : 0) : (round + turn) % 3;
      bool shim_turn = which == 1;
      Target& target = which == 0 ? direct : which == 1 ? shim : *pipe;
      Side& side = which == 0 ? m.direct : which == 1 ? m.shim : m.pipe;
      pid_t relay_pid = which == 2 ? pipe->pid : shim.pid;  // whose CPU this side reports
      ProcSample before = SampleProcess(relay_pid);
      ProcSample runtime_before = SampleProcess(runtime_pid);
      BlockResult block = RunBlock(target, one, shim_turn, callers, per_round, seconds,
                                   shim_turn ? shim_size : direct_size);
      ProcSample after = SampleProcess(relay_pid);
      ProcSample runtime_after = SampleProcess(runtime_pid);
      side.ticks += after.ticks - before.ticks;
      side.sched_ns += after.sched_ns - before.sched_ns;
      side.switches += after.switches - before.switches;
      side.runtime_ticks += runtime_after.ticks - runtime_before.ticks;
      side.Add(std::move(block));
    }
  }
  m.direct.Finish();
  m.shim.Finish();
  m.pipe.Finish();
  return m;
}

std::vector<Method> MakeMethods(const std::string& stored, const std::string& kubelet_name) {
  std::vector<Method> all;
  {
    cri::VersionRequest request;
    request.set_version("v1");
    std::string bytes = request.SerializeAsString();
    all.push_back({"Version", "/runtime.v1.RuntimeService/Version", bytes, bytes, ""});
  }
  {
    std::string bytes = crit::ListContainersRequest().SerializeAsString();
    all.push_back({"ListContainers", "/runtime.v1.RuntimeService/ListContainers", bytes, bytes,
                   "no containers exist: small answers"});
  }
  {
    cri::ImageStatusRequest direct_request, shim_request;
    direct_request.mutable_image()->set_image(stored);
    shim_request.mutable_image()->set_image(kubelet_name);
    all.push_back({"ImageStatus", "/runtime.v1.ImageService/ImageStatus",
                   direct_request.SerializeAsString(), shim_request.SerializeAsString(),
                   "shim: `" + kubelet_name + "`; direct: the name containerd holds it under, `" +
                       stored + "`"});
    all.push_back({"ImageStatusStored", "/runtime.v1.ImageService/ImageStatus",
                   direct_request.SerializeAsString(), direct_request.SerializeAsString(),
                   "the stored name on both sides"});
  }
  {
    std::string bytes = cri::ListImagesRequest().SerializeAsString();
    all.push_back({"ListImages", "/runtime.v1.ImageService/ListImages", bytes, bytes,
                   "no filter: one image listed"});
  }
  return all;
}

Report Run(const Options& options) {
  Report report;
  auto run_start = Clock::now();
  report.cores = std::thread::hardware_concurrency();
  report.machine_cpu = CpuModel();
  utsname uts{};
  if (uname(&uts) == 0) report.kernel = std::string(uts.sysname) + " " + uts.release;
  report.containerd_version = FirstLine(RunCommand({"containerd", "--version"}).output);
  report.shim_version = FirstLine(RunCommand({options.shim_binary, "--version"}).output);
  report.binary_bytes = static_cast<long long>(std::filesystem::file_size(options.shim_binary));
  report.stripped_bytes = StrippedSize(options.shim_binary);
  if (!options.deb.empty()) {
    report.deb_bytes = static_cast<long long>(std::filesystem::file_size(options.deb));
  }
  report.libraries = CountSharedLibraries(options.shim_binary);

  Progress("starting a registry (TLS, credentials) and pushing library/nginx:latest");
  Registry registry(
      {.host_name = "registry-a.test", .username = "bench", .password = "bench-secret", .port = 0});
  TestImage image = PushImage(registry, "library/nginx:latest");
  report.image_id = image.image_id;
  report.kubelet_name = "nginx:latest";
  report.stored_name = "docker.io/library/nginx:latest";  // settled after the pull below

  Progress("starting containerd (log level info)");
  Containerd containerd;
  pid_t runtime_pid = FindProcess(containerd.config_path());

  TempDir dir("bench");
  std::string socket = dir.File("shim.sock");
  std::string config = dir.File("shim.yaml");
  WriteFile(config, ShimConfig(socket, containerd.Socket(), {&registry}, FreeLoopbackPort()), 0600);

  std::vector<Method> all = MakeMethods(report.stored_name, report.kubelet_name);
  auto find = [&](const std::string& name) -> const Method& {
    for (const auto& m : all) {
      if (m.name == name) return m;
    }
    throw std::runtime_error("unknown method " + name);
  };

  Progress("start to ready: " + std::to_string(options.starts) + " starts");
  report.starts = MeasureStarts(options, config, socket, find("Version"));

  Progress("starting the shim for the measurements (default logging)");
  ShimProcess shim({.config_path = config, .socket_path = socket, .binary = options.shim_binary});
  shim.Start();
  // Idle as on a node, where the shim has long finished starting: past the release of the
  // pages only start-up touched (2 s after the start, src/daemon/startup_pages.h).
  std::this_thread::sleep_for(std::chrono::milliseconds(kIdleSettleMs));
  report.idle_memory = ReadProcessMemory(shim.pid());
  report.rss_idle = report.idle_memory.rss;

  int max_callers = std::max(options.memory_callers,
                             *std::max_element(options.callers.begin(), options.callers.end()));
  Target direct("direct", containerd.Socket(), max_callers);
  Target through("shim", socket, max_callers);
  direct.pid = runtime_pid;
  through.pid = shim.pid();
  // The floor: a plain byte pipe in the shim's place, between the same client and containerd.
  std::unique_ptr<Subprocess> pipe_process;
  std::unique_ptr<Target> pipe;
  if (!options.pipe_binary.empty()) {
    std::string pipe_socket = dir.File("pipe.sock");
    pipe_process = std::make_unique<Subprocess>(
        SubprocessOptions{.argv = {options.pipe_binary, pipe_socket, containerd.Socket()},
                          .log_path = dir.File("pipe.log")});
    pipe_process->Start();
    if (!WaitUntil([&] { return UnixSocketAccepts(pipe_socket); }, std::chrono::seconds(10))) {
      throw std::runtime_error("the byte pipe did not start: " + pipe_process->LogText());
    }
    pipe = std::make_unique<Target>("pipe", pipe_socket, max_callers);
    pipe->pid = pipe_process->pid();
  }

  Progress("pulling nginx:latest through the shim, as kubelet would");
  {
    cri::PullImageRequest pull;
    pull.mutable_image()->set_image(report.kubelet_name);
    CallResult pulled =
        through.callers[0]->Call("/runtime.v1.ImageService/PullImage", pull.SerializeAsString());
    if (!pulled.ok) throw std::runtime_error("pull through the shim failed: " + pulled.error);
    std::string answer;
    cri::ImageStatusResponse status;
    // The name containerd holds the image under: kubelet's with `imageNames: requested`, the
    // registry's with `registry` or a shim binary from before (--shim-binary).
    report.stored_name = HeldName(containerd.Socket(), image.image_id);
    all = MakeMethods(report.stored_name, report.kubelet_name);
    const Method& image_status = find("ImageStatus");
    for (auto* side : {&direct, &through}) {
      const std::string& request =
          side == &direct ? image_status.direct_request : image_status.shim_request;
      CallResult r = side->callers[0]->Call(image_status.path, request, &answer);
      if (!r.ok || !status.ParseFromString(answer) || status.image().id() != image.image_id) {
        throw std::runtime_error("ImageStatus on the " + side->name +
                                 " socket does not answer the pulled image " + image.image_id);
      }
    }
  }
  report.rss_after_pull = RssKiB(shim.pid());

  std::vector<const Method*> selected;
  for (const auto& name : options.methods) selected.push_back(&find(name));

  if (options.memory_calls > 0) {
    for (int round = 1; round <= 2; ++round) {
      Progress("memory round " + std::to_string(round) + ": " +
               std::to_string(options.memory_calls) + " mixed calls through the shim, " +
               std::to_string(options.memory_callers) + " callers");
      BlockResult block =
          RunBlock(through, selected, true, options.memory_callers, options.memory_calls, 0, {});
      report.memory_calls += block.calls;
      report.memory_errors += block.errors;
      if (report.memory_first_error.empty()) report.memory_first_error = block.first_error;
      report.memory_cps = block.calls / block.wall_s;
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      (round == 1 ? report.rss_round1 : report.rss_round2) = RssKiB(shim.pid());
    }
  }

  report.loadavg = FirstLine(ReadSmallFile("/proc/loadavg").value_or("?"));
  MachineSample machine_before = SampleMachine();
  pid_t pipe_pid = pipe ? pipe->pid : 0;
  long long ours_before = SampleProcess(getpid()).ticks + SampleProcess(shim.pid()).ticks +
                          SampleProcess(runtime_pid).ticks +
                          (pipe_pid ? SampleProcess(pipe_pid).ticks : 0);
  for (const Method* method : selected) {
    for (int callers : options.callers) {
      Progress(method->name + " at " + std::to_string(callers) + " caller(s)");
      report.measurements.push_back(
          Measure(options, direct, through, pipe.get(), runtime_pid, *method, callers));
      const auto& m = report.measurements.back();
      Progress("  direct p50 " + Fixed(m.direct.p50, 0) + " us, shim p50 " + Fixed(m.shim.p50, 0) +
               " us, throughput ratio " + Fixed(m.shim.cps / m.direct.cps, 2) +
               (m.pipe.calls > 0 ? ", pipe p50 " + Fixed(m.pipe.p50, 0) + " us" : ""));
    }
  }
  {
    MachineSample machine_after = SampleMachine();
    long long ours_after = SampleProcess(getpid()).ticks + SampleProcess(shim.pid()).ticks +
                           SampleProcess(runtime_pid).ticks +
                           (pipe_pid ? SampleProcess(pipe_pid).ticks : 0);
    double total = static_cast<double>(machine_after.total - machine_before.total);
    if (total > 0) {
      double busy = static_cast<double>(machine_after.busy - machine_before.busy);
      report.machine_busy_pct = 100.0 * busy / total;
      report.foreign_busy_pct =
          std::max(0.0, 100.0 * (busy - static_cast<double>(ours_after - ours_before)) / total);
    }
  }
  for (const auto& m : report.measurements) report.total_shim_calls += m.shim.calls;
  report.total_shim_calls += report.memory_calls;
  report.end_memory = ReadProcessMemory(shim.pid());
  report.rss_end = report.end_memory.rss;
  if (options.bursts > 0) {
    Progress(std::to_string(options.bursts) + " floods of " + std::to_string(options.burst_calls) +
             " concurrent calls over " + std::to_string(options.burst_connections) +
             " connections, then " + std::to_string(options.burst_idle_ms) + " ms idle");
    report.burst =
        MeasureBursts(shim.pid(), socket, report.kubelet_name, options.bursts,
                      options.burst_connections, options.burst_calls, options.burst_idle_ms);
  }
  if (!shim.Running())
    throw std::runtime_error("the shim died during the run:\n" + TailLines(shim.Log()));
  ExitStatus stopped = shim.Stop();
  if (!stopped.Success()) {
    throw std::runtime_error("the shim did not stop cleanly: " + stopped.ToString() + "\n" +
                             TailLines(shim.Log()));
  }

  if (options.configmap) {
    Progress("idle memory of a shim watching its ConfigMap over TLS");
    report.configmap = MeasureIdleWatchingConfigMap(
        options.shim_binary, containerd.Socket(), registry.Address(),
        registry.username() + ":" + registry.password(), kIdleSettleMs);
  }

  if (options.count_calls > 0) {
    report.count = CountRuntimeCalls(options, registry, image);
  } else {
    report.count.skipped_why = "skipped (--count-calls 0)";
  }
  report.total_s = std::chrono::duration<double>(Clock::now() - run_start).count();
  return report;
}

// --- reporting ---------------------------------------------------------------------------

std::string Ratio(double shim, double direct) {
  return direct > 0 ? Fixed(shim / direct, 2) : "-";
}

struct TargetRow {
  std::string figure, target, measured;
  bool met;
};

// CPU per call of the relay serving `side` (the shim, or the pipe for the pipe's side), from
// schedstat run time (ns; /proc/PID/stat's 10 ms ticks are too coarse for the pipe).
double SchedCpuPerCall(const Side& side) {
  return side.calls ? side.sched_ns / 1000.0 / side.calls : 0;
}

// The methods the shim relays as they are (not the image calls it answers itself).
bool Relayed(const std::string& method) {
  return method == "Version" || method == "ListContainers";
}

// One line per measurement against the floor: pipe p50 and CPU, and the shim's over them.
struct FloorRow {
  std::string method;
  int callers;
  double pipe_p50, pipe_over_direct, shim_over_pipe, pipe_cpu, shim_cpu, cpu_ratio;
  // Throughput: the pipe's over direct's, and the shim's over the pipe's.
  double pipe_cps_over_direct, shim_cps_over_pipe;
};
std::vector<FloorRow> FloorRows(const Report& r) {
  std::vector<FloorRow> rows;
  for (const auto& m : r.measurements) {
    if (m.pipe.calls == 0) continue;
    // schedstat (ns) rather than stat (10 ms ticks): the pipe's CPU is a few us per call.
    double pipe_cpu = SchedCpuPerCall(m.pipe), shim_cpu = SchedCpuPerCall(m.shim);
    rows.push_back({m.method, m.callers, m.pipe.p50, m.pipe.p50 / m.direct.p50,
                    m.shim.p50 / m.pipe.p50, pipe_cpu, shim_cpu,
                    pipe_cpu > 0 ? shim_cpu / pipe_cpu : 0,
                    m.direct.cps > 0 ? m.pipe.cps / m.direct.cps : 0,
                    m.pipe.cps > 0 ? m.shim.cps / m.pipe.cps : 0});
  }
  return rows;
}

std::vector<TargetRow> Targets(const Report& r) {
  std::vector<TargetRow> rows;
  for (const auto& m : r.measurements) {
    if (m.callers == 1) {
      double ratio = m.shim.p50 / m.direct.p50;
      rows.push_back(
          {"p50 shim/direct, 1 caller, " + m.method, "<= 1.40", Fixed(ratio, 3), ratio <= 1.4});
    }
  }
  for (const auto& m : r.measurements) {
    if (m.callers == 8) {
      double ratio = m.shim.cps / m.direct.cps;
      rows.push_back({"throughput shim/direct, 8 callers, " + m.method, ">= 0.75", Fixed(ratio, 3),
                      ratio >= 0.75});
    }
  }
  // The relay's own cost against the floor (a byte pipe in its place, same run).
  for (const auto& f : FloorRows(r)) {
    if (f.callers == 1 && Relayed(f.method)) {
      rows.push_back({"shim CPU per call / pipe's, 1 caller, " + f.method, "<= 1.25",
                      Fixed(f.cpu_ratio, 2), f.cpu_ratio <= 1.25});
    }
  }
  for (const auto& m : r.measurements) {
    if (m.pipe.calls > 0 && m.callers == 1 && Relayed(m.method)) {
      double ratio = m.shim.p50 / m.direct.p50;
      rows.push_back({"p50 shim/direct, 1 caller, relayed " + m.method + " (floor target)",
                      "<= 1.25", Fixed(ratio, 3), ratio <= 1.25});
    }
    if (m.pipe.calls > 0 && m.callers == 8 && Relayed(m.method)) {
      double ratio = m.shim.cps / m.direct.cps;
      rows.push_back({"throughput shim/direct, 8 callers, relayed " + m.method + " (floor target)",
                      ">= 0.85", Fixed(ratio, 3), ratio >= 0.85});
    }
  }
  if (r.count.done) {
    rows.push_back({"ImageStatus by kubelet's name, runtime calls per request (remembered)", "1",
                    Fixed(r.count.remembered_per_request, 2),
                    r.count.remembered_per_request <= 1.005});
  }
  // Issue 15: the realistic idle figure is that of a shim watching its ConfigMap over TLS.
  if (r.configmap.memory.rss > 0) {
    rows.push_back({"RSS idle, watching the ConfigMap over TLS", "<= 10 MiB",
                    MiB(r.configmap.memory.rss), r.configmap.memory.rss <= 10 * 1024});
  }
  if (r.libraries >= 0) {
    rows.push_back({"shared libraries (ldd, vdso left out)", "<= 16", std::to_string(r.libraries),
                    r.libraries <= 16});
  }
  if (!r.burst.after.empty()) {
    // What the floods allocated is given back once they are over: idle again, the shim holds
    // no more than before them plus what the runtime connection's grown tables keep.
    long long kept = r.burst.after_idle - r.burst.before;
    rows.push_back({"RSS kept after the floods, idle again", "<= 2 MiB more than before",
                    std::to_string(kept) + " KiB", kept <= 2048});
  }
  if (r.rss_round2 > 0) {
    rows.push_back({"RSS after 2 x " + std::to_string(r.memory_calls / 2) + " calls", "<= 16 MiB",
                    MiB(r.rss_round2), r.rss_round2 <= 16 * 1024});
    long long growth = r.rss_round2 - r.rss_round1;
    // A page or a few of allocator noise is not growth; a leak of even 1 byte per call would
    // show as about 100 KiB per round.
    rows.push_back({"RSS growth, round 2 - round 1", "none (<= 64 KiB: page noise)",
                    std::to_string(growth) + " KiB", growth <= 64});
  }
  rows.push_back({"start to ready (median, socket accepting)", "<= 15 ms",
                  Fixed(r.starts.accept_median, 1) + " ms", r.starts.accept_median <= 15});
  return rows;
}

// The figures of the process as it would run on a node: idle with its ConfigMap, after floods,
// its size on disk. (label, value) pairs for the text and markdown reports.
std::vector<std::pair<std::string, std::string>> MemoryLines(const Report& r) {
  std::vector<std::pair<std::string, std::string>> lines;
  if (r.configmap.memory.rss > 0) {
    lines.push_back({"RSS idle watching the ConfigMap over TLS (" + r.configmap.payload_note + ")",
                     MiB(r.configmap.memory.rss) + " (" + r.configmap.memory.Describe() + ")"});
  }
  if (!r.burst.after.empty()) {
    std::string series = MiB(r.burst.before);
    for (long long kib : r.burst.after) series += " -> " + MiB(kib);
    std::string took;
    for (double ms : r.burst.took_ms) took += (took.empty() ? "" : ", ") + Fixed(ms, 0) + " ms";
    lines.push_back({"RSS before and after each flood of " + std::to_string(r.burst.calls) +
                         " concurrent calls over " + std::to_string(r.burst.connections) +
                         " connections",
                     series + " (floods took " + took + ")"});
    lines.push_back(
        {"RSS " + std::to_string(r.burst.idle_ms) + " ms after the floods' connections closed",
         MiB(r.burst.after_idle) + " (" + r.burst.idle_memory.Describe() + ")"});
  }
  if (r.libraries >= 0) {
    lines.push_back({"shared libraries (ldd, vdso left out)", std::to_string(r.libraries)});
  }
  if (r.binary_bytes >= 0) {
    lines.push_back(
        {"binary size (as built; stripped)", Fixed(r.binary_bytes / 1024.0, 0) + " KiB; " +
                                                 Fixed(r.stripped_bytes / 1024.0, 0) + " KiB"});
  }
  if (r.deb_bytes >= 0) {
    lines.push_back({".deb size", Fixed(r.deb_bytes / 1024.0, 0) + " KiB"});
  }
  return lines;
}

void PrintText(const Report& r, std::ostream& out) {
  double tick = TickUs();
  out << "\nimage-cri-shim benchmark: " << r.cores << " cores, " << r.machine_cpu << ", "
      << r.kernel << "\n"
      << r.shim_version << "; " << r.containerd_version << "\n"
      << "ImageStatus: shim `" << r.kubelet_name << "`, direct `" << r.stored_name << "`\n\n";
  out << Pad("method", 18, true) << Pad("callers", 8) << " |" << Pad("direct p50", 11)
      << Pad("p99", 8) << Pad("calls/s", 9) << " |" << Pad("shim p50", 9) << Pad("p99", 8)
      << Pad("calls/s", 9) << " |" << Pad("p50 x", 7) << Pad("p99 x", 7) << Pad("cps x", 7) << " |"
      << Pad("shim CPU us/call", 17) << Pad("ctxsw/call", 11) << "\n";
  for (const auto& m : r.measurements) {
    double cpu_stat = m.shim.calls ? m.shim.ticks * tick / m.shim.calls : 0;
    double cpu_sched = m.shim.calls ? m.shim.sched_ns / 1000.0 / m.shim.calls : 0;
    out << Pad(m.method, 18, true) << Pad(std::to_string(m.callers), 8) << " |"
        << Pad(Fixed(m.direct.p50, 0), 11) << Pad(Fixed(m.direct.p99, 0), 8)
        << Pad(Fixed(m.direct.cps, 0), 9) << " |" << Pad(Fixed(m.shim.p50, 0), 9)
        << Pad(Fixed(m.shim.p99, 0), 8) << Pad(Fixed(m.shim.cps, 0), 9) << " |"
        << Pad(Ratio(m.shim.p50, m.direct.p50), 7) << Pad(Ratio(m.shim.p99, m.direct.p99), 7)
        << Pad(Ratio(m.shim.cps, m.direct.cps), 7) << " |"
        << Pad(Fixed(cpu_stat, 1) + " (" + Fixed(cpu_sched, 1) + ")", 17)
        << Pad(Fixed(m.shim.calls ? double(m.shim.switches) / m.shim.calls : 0, 2), 11) << "\n";
  }
  out << "(latencies in us; x = shim / direct; shim CPU from /proc/PID/stat utime+stime, in "
         "parentheses from schedstat run time)\n\n";
  if (auto floor = FloorRows(r); !floor.empty()) {
    out << "the floor: a plain byte pipe in the shim's place, same rounds\n"
        << Pad("method", 18, true) << Pad("callers", 8) << " |" << Pad("pipe p50", 9)
        << Pad("pipe/direct", 12) << Pad("shim/pipe", 10) << " |" << Pad("pipe CPU", 9)
        << Pad("shim CPU", 9) << Pad("shim/pipe", 10) << " |" << Pad("pipe/direct", 12)
        << Pad("shim/pipe", 10) << "\n";
    for (const auto& f : floor) {
      out << Pad(f.method, 18, true) << Pad(std::to_string(f.callers), 8) << " |"
          << Pad(Fixed(f.pipe_p50, 0), 9) << Pad(Fixed(f.pipe_over_direct, 2), 12)
          << Pad(Fixed(f.shim_over_pipe, 2), 10) << " |" << Pad(Fixed(f.pipe_cpu, 1), 9)
          << Pad(Fixed(f.shim_cpu, 1), 9) << Pad(Fixed(f.cpu_ratio, 2), 10) << " |"
          << Pad(Fixed(f.pipe_cps_over_direct, 2), 12) << Pad(Fixed(f.shim_cps_over_pipe, 2), 10)
          << "\n";
    }
    out << "(p50 in us; CPU in us per call from schedstat run time; last two: calls/s)\n\n";
  }
  out << "containerd CPU us/call (stat):";
  for (const auto& m : r.measurements) {
    out << "  " << m.method << "/" << m.callers << " direct "
        << Fixed(m.direct.calls ? m.direct.runtime_ticks * tick / m.direct.calls : 0, 0) << " shim "
        << Fixed(m.shim.calls ? m.shim.runtime_ticks * tick / m.shim.calls : 0, 0) << ";";
  }
  out << "\n\nstart to ready (" << r.starts.ready_ms.size() << " starts): socket accepting "
      << Fixed(r.starts.accept_median, 1) << " ms, first Version answered "
      << Fixed(r.starts.ready_median, 1) << " ms (median; max " << Fixed(r.starts.ready_max, 1)
      << " ms)\n";
  out << "resident memory: idle " << MiB(r.rss_idle) << ", after the pull " << MiB(r.rss_after_pull)
      << ", after " << r.memory_calls / 2 << " calls " << MiB(r.rss_round1) << ", after "
      << r.memory_calls << " " << MiB(r.rss_round2) << " (growth " << (r.rss_round2 - r.rss_round1)
      << " KiB), at the end (" << r.total_shim_calls << " calls) " << MiB(r.rss_end) << "\n";
  out << "  idle: " << r.idle_memory.Describe() << "; at the end: " << r.end_memory.Describe()
      << "\n";
  for (const auto& line : MemoryLines(r)) out << line.first << ": " << line.second << "\n";
  out << "memory rounds: mixed methods, " << Fixed(r.memory_cps, 0)
      << " calls/s through the shim\n";
  if (r.count.done) {
    out << "runtime calls per ImageStatus (containerd trace log; shim registries: "
        << r.count.layout << "): direct stored name " << Fixed(r.count.direct_per_request, 2)
        << " (method check), shim by kubelet's name after a pull through it "
        << Fixed(r.count.remembered_per_request, 2) << ", after a shim restart "
        << Fixed(r.count.restarted_per_request, 2) << "\n";
  } else {
    out << "runtime calls per ImageStatus: " << r.count.skipped_why << "\n";
  }
  out << "during the latency measurements the machine was " << Fixed(r.machine_busy_pct, 0)
      << "% busy (all cores); other processes than cri-bench, the shim and containerd: "
      << Fixed(r.foreign_busy_pct, 1) << "% (load average at the start: " << r.loadavg << ")\n";
  out << "\ntargets (issues 7, 15 and 16):\n";
  for (const auto& row : Targets(r)) {
    out << "  " << Pad(row.met ? "met" : "NOT MET", 8, true) << row.figure << ": " << row.measured
        << " (target " << row.target << ")\n";
  }
  out << "\ntotal run time " << Fixed(r.total_s, 0) << " s\n";
}

void WriteMarkdown(const Report& r, const Options& options, const std::string& path) {
  double tick = TickUs();
  std::ostringstream out;
  out << "Command: `" << options.command_line << "`\n\n";
  out << "Machine: " << r.cores << " cores (nproc), " << r.machine_cpu << ", " << r.kernel << "; "
      << r.containerd_version << "; " << r.shim_version << ".\n\n";
  out << "| method | callers | direct p50 us | direct p99 us | direct calls/s | shim p50 us | "
         "shim p99 us | shim calls/s | p50 x | p99 x | calls/s x | shim CPU us/call | shim "
         "ctx switches/call |\n";
  out << "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& m : r.measurements) {
    double cpu_stat = m.shim.calls ? m.shim.ticks * tick / m.shim.calls : 0;
    double cpu_sched = m.shim.calls ? m.shim.sched_ns / 1000.0 / m.shim.calls : 0;
    out << "| " << m.method << " | " << m.callers << " | " << Fixed(m.direct.p50, 0) << " | "
        << Fixed(m.direct.p99, 0) << " | " << Fixed(m.direct.cps, 0) << " | "
        << Fixed(m.shim.p50, 0) << " | " << Fixed(m.shim.p99, 0) << " | " << Fixed(m.shim.cps, 0)
        << " | " << Ratio(m.shim.p50, m.direct.p50) << " | " << Ratio(m.shim.p99, m.direct.p99)
        << " | " << Ratio(m.shim.cps, m.direct.cps) << " | " << Fixed(cpu_stat, 1) << " ("
        << Fixed(cpu_sched, 1) << ") | "
        << Fixed(m.shim.calls ? double(m.shim.switches) / m.shim.calls : 0, 2) << " |\n";
  }
  out << "\nCalls per target per row: " << r.measurements.front().direct.calls << " in "
      << options.rounds << " interleaved rounds (direct/shim, shim/direct, ...). x = shim / "
      << "direct. ImageStatus: the shim is asked for `" << r.kubelet_name
      << "`, containerd directly for `" << r.stored_name << "`. Shim CPU from "
      << "`/proc/PID/stat` utime+stime (in parentheses: the sum of the threads' schedstat run "
      << "time).\n\n";
  if (auto floor = FloorRows(r); !floor.empty()) {
    out << "The floor, in the same rounds: a plain byte pipe (`cri-byte-pipe`: one thread, epoll, "
           "read and write) in the shim's place between the same client and containerd. CPU per "
           "call from schedstat run time.\n\n";
    out << "| method | callers | pipe p50 us | pipe/direct p50 | shim/pipe p50 | pipe CPU us/call "
           "| shim CPU us/call | shim/pipe CPU | pipe/direct calls/s | shim/pipe calls/s |\n";
    out << "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (const auto& f : floor) {
      out << "| " << f.method << " | " << f.callers << " | " << Fixed(f.pipe_p50, 0) << " | "
          << Fixed(f.pipe_over_direct, 2) << " | " << Fixed(f.shim_over_pipe, 2) << " | "
          << Fixed(f.pipe_cpu, 1) << " | " << Fixed(f.shim_cpu, 1) << " | " << Fixed(f.cpu_ratio, 2)
          << " | " << Fixed(f.pipe_cps_over_direct, 2) << " | " << Fixed(f.shim_cps_over_pipe, 2)
          << " |\n";
    }
    out << "\n";
  }
  out << "| figure | value |\n|---|---|\n";
  out << "| start to ready, socket accepting (median of " << r.starts.ready_ms.size() << ") | "
      << Fixed(r.starts.accept_median, 1) << " ms |\n";
  out << "| start to ready, first Version answered (median; max) | "
      << Fixed(r.starts.ready_median, 1) << " ms; " << Fixed(r.starts.ready_max, 1) << " ms |\n";
  out << "| RSS idle (3 s after start) | " << MiB(r.rss_idle) << " |\n";
  out << "| idle, by kind | " << r.idle_memory.Describe() << " |\n";
  out << "| RSS after the pull through the shim | " << MiB(r.rss_after_pull) << " |\n";
  out << "| RSS after " << r.memory_calls / 2 << " calls | " << MiB(r.rss_round1) << " |\n";
  out << "| RSS after " << r.memory_calls << " calls | " << MiB(r.rss_round2) << " |\n";
  out << "| RSS growth between the rounds | " << (r.rss_round2 - r.rss_round1) << " KiB |\n";
  out << "| RSS at the end (" << r.total_shim_calls << " calls) | " << MiB(r.rss_end) << " ("
      << r.end_memory.Describe() << ") |\n";
  for (const auto& line : MemoryLines(r))
    out << "| " << line.first << " | " << line.second << " |\n";
  if (r.count.done) {
    out << "| runtime calls per ImageStatus, direct stored name (method check) | "
        << Fixed(r.count.direct_per_request, 2) << " |\n";
    out << "| runtime calls per ImageStatus by kubelet's name, after a pull through the shim | "
        << Fixed(r.count.remembered_per_request, 2) << " |\n";
    out << "| same, after a shim restart (image in the second registry) | "
        << Fixed(r.count.restarted_per_request, 2) << " |\n";
  }
  out << "| machine busy during the latency measurements (all cores) | "
      << Fixed(r.machine_busy_pct, 0) << "% |\n";
  out << "| of which other processes than cri-bench, the shim and containerd | "
      << Fixed(r.foreign_busy_pct, 1) << "% |\n";
  out << "\n| target (issues 7, 15 and 16) | target | measured | |\n|---|---|---|---|\n";
  for (const auto& row : Targets(r)) {
    out << "| " << row.figure << " | " << row.target << " | " << row.measured << " | "
        << (row.met ? "met" : "**not met**") << " |\n";
  }
  WriteFile(path, out.str());
}

// Problems that make the numbers meaningless; empty when the run is sane.
std::vector<std::string> SanityProblems(const Report& r) {
  std::vector<std::string> problems;
  for (const auto& m : r.measurements) {
    for (const auto* side : {&m.direct, &m.shim}) {
      std::string what =
          m.method + "/" + std::to_string(m.callers) + (side == &m.direct ? " direct" : " shim");
      if (side->errors > 0) {
        problems.push_back(what + ": " + std::to_string(side->errors) +
                           " failed calls, first: " + side->first_error);
      }
      if (side->odd_sizes > 0) {
        problems.push_back(what + ": " + std::to_string(side->odd_sizes) +
                           " answers of an unexpected size");
      }
      if (side->calls <= 0 || !(side->p50 > 0) || side->p99 < side->p50 || !(side->cps > 0) ||
          !std::isfinite(side->cps)) {
        problems.push_back(what + ": figures not sane");
      }
    }
  }
  if (r.memory_errors > 0) {
    problems.push_back("memory rounds: " + std::to_string(r.memory_errors) +
                       " failed calls, first: " + r.memory_first_error);
  }
  if (r.rss_idle <= 0 || r.rss_end <= 0) problems.push_back("resident memory not readable");
  if ((!r.configmap.payload_note.empty() && r.configmap.memory.rss <= 0) ||
      (!r.burst.after.empty() && r.burst.after_idle <= 0)) {
    problems.push_back("resident memory of the ConfigMap shim or after the floods not readable");
  }
  if (r.starts.ready_ms.empty() || !(r.starts.ready_median > 0)) {
    problems.push_back("no start-to-ready figure");
  }
  if (r.count.done && !(r.count.direct_per_request > 0.99 && r.count.direct_per_request < 1.01)) {
    problems.push_back("counting runtime calls does not work: a direct ImageStatus counted " +
                       Fixed(r.count.direct_per_request, 2) + " times");
  }
  return problems;
}

}  // namespace
}  // namespace shim::bench

int main(int argc, char** argv) {
  using namespace shim::bench;
  Options options;
  options.shim_binary = shim::testing::ShimBinaryPath();
  CLI::App app{"cri-bench: the shim against direct containerd (run under tests/e2e/sandbox.sh)",
               "cri-bench"};
  std::string methods_text;
  std::string callers_text;
  app.add_option("--shim", options.shim_binary, "The image-cri-shim binary")->capture_default_str();
  options.pipe_binary = (std::filesystem::path(argv[0]).parent_path() / "cri-byte-pipe").string();
  app.add_option("--pipe", options.pipe_binary,
                 "The byte pipe measured as the floor (cri-byte-pipe); \"\" = no floor")
      ->capture_default_str();
  auto* calls_opt = app.add_option("--calls", options.calls,
                                   "Calls per target for each method and number of callers")
                        ->capture_default_str();
  app.add_option("--duration", options.duration,
                 "Seconds per target for each method and number of callers (replaces --calls)");
  auto* rounds_opt =
      app.add_option("--rounds", options.rounds, "Interleaved rounds per measurement")
          ->capture_default_str();
  auto* warmup_opt =
      app.add_option("--warmup", options.warmup, "Warm-up calls per target before each measurement")
          ->capture_default_str();
  app.add_option("--methods", methods_text,
                 "Comma-separated: Version,ListContainers,ImageStatus,ListImages,"
                 "ImageStatusStored (default: the first four)");
  app.add_option("--callers", callers_text, "Comma-separated numbers of concurrent callers (1,8)");
  auto* memory_opt = app.add_option("--memory-calls", options.memory_calls,
                                    "Calls per memory round (two rounds; 0 skips them)")
                         ->capture_default_str();
  auto* starts_opt =
      app.add_option("--starts", options.starts, "Shim starts to time")->capture_default_str();
  auto* count_opt =
      app.add_option("--count-calls", options.count_calls,
                     "ImageStatus calls for counting runtime calls per request (0 skips)")
          ->capture_default_str();
  auto* bursts_opt =
      app.add_option("--bursts", options.bursts,
                     "Floods of concurrent calls at the end, for the memory they leave (0 skips)")
          ->capture_default_str();
  app.add_option("--burst-calls", options.burst_calls, "Concurrent calls per flood")
      ->capture_default_str();
  app.add_option("--burst-connections", options.burst_connections,
                 "Connections the flood's calls are spread over")
      ->capture_default_str();
  app.add_option("--burst-idle-ms", options.burst_idle_ms,
                 "Idle time after the floods before the memory is read")
      ->capture_default_str();
  app.add_flag("!--no-configmap", options.configmap,
               "Skip the idle figure of a shim watching its ConfigMap over TLS");
  app.add_option("--deb", options.deb, "The built .deb, to report its size");
  app.add_option("--markdown", options.markdown, "Also write the results as markdown to PATH");
  app.add_flag("--quick", options.quick,
               "A short run that proves the benchmark works (few calls, small memory rounds)");
  CLI11_PARSE(app, argc, argv);

  for (int i = 0; i < argc; ++i) {
    options.command_line += (i ? " " : "") + std::string(i == 0 ? "cri-bench" : argv[i]);
  }
  if (options.quick) {
    if (calls_opt->count() == 0) options.calls = 400;
    if (rounds_opt->count() == 0) options.rounds = 4;
    if (warmup_opt->count() == 0) options.warmup = 50;
    if (memory_opt->count() == 0) options.memory_calls = 2000;
    if (starts_opt->count() == 0) options.starts = 3;
    if (count_opt->count() == 0) options.count_calls = 50;
    if (bursts_opt->count() == 0) {
      options.bursts = 1;
      options.burst_calls = 200;
      options.burst_connections = 4;
      options.burst_idle_ms = 300;
    }
  }
  auto split = [](const std::string& text) {
    std::vector<std::string> parts;
    std::stringstream s(text);
    std::string part;
    while (std::getline(s, part, ',')) {
      if (!part.empty()) parts.push_back(part);
    }
    return parts;
  };
  if (!methods_text.empty()) {
    options.methods = split(methods_text);
    for (const auto& m : options.methods) {
      if (std::find(kKnownMethods.begin(), kKnownMethods.end(), m) == kKnownMethods.end()) {
        std::cerr << "cri-bench: unknown method " << m << "\n";
        return 2;
      }
    }
  }
  if (!callers_text.empty()) {
    options.callers.clear();
    for (const auto& c : split(callers_text)) options.callers.push_back(std::atoi(c.c_str()));
  }
  if (options.methods.empty() || options.callers.empty() || options.rounds < 1 ||
      std::any_of(options.callers.begin(), options.callers.end(), [](int c) { return c < 1; }) ||
      (options.duration <= 0 && options.calls < options.rounds)) {
    std::cerr << "cri-bench: bad options (methods, callers >= 1, rounds >= 1, calls >= rounds)\n";
    return 2;
  }
  if (!shim::testing::TestCa::Available()) {
    std::cerr << "cri-bench: run me under tests/e2e/sandbox.sh (bench/run.sh, `make bench`)\n";
    return 2;
  }
  try {
    Report report = Run(options);
    PrintText(report, std::cout);
    if (!options.markdown.empty()) {
      WriteMarkdown(report, options, options.markdown);
      std::cout << "markdown written to " << options.markdown << "\n";
    }
    auto problems = SanityProblems(report);
    if (!problems.empty()) {
      std::cerr << "\ncri-bench: the run is not sane:\n";
      for (const auto& p : problems) std::cerr << "  " << p << "\n";
      return 1;
    }
    std::cout << "cri-bench: every call succeeded\n";
    return 0;
  } catch (const std::exception& e) {
    std::cout << std::flush;
    std::cerr << "\ncri-bench: " << e.what() << "\n";
    return 1;
  }
}
