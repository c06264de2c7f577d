// Faults under load, end to end: the built shim between eight CRI callers (playing kubelet) and
// a real containerd, with two real TLS registries that want credentials, while the world
// misbehaves: containerd is killed, a registry dies in the middle of a blob, the configuration
// file is replaced with garbage, the Kubernetes API flaps, kubelet gives up on a pull half way,
// and a flood of calls, garbage bytes and idle connections hits the socket. Each test says what
// the callers saw and what was lost, and checks both. Runs under sandbox.sh (ctest e2e_faults);
// every process a test starts it stops, and every shim log goes to the suite-wide secret check.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "containerd.h"
#include "cri_async_client.h"
#include "cri_client.h"
#include "cri_runtime_test.pb.h"
#include "kube_api_server.h"
#include "registry.h"
#include "shim_process.h"
#include "temp_dir.h"
#include "test_image.h"
#include "test_secrets.h"
#include "test_util.h"

namespace shim::testing {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
namespace crit = ::imagecrishim::cri::test;

// Credentials from test_secrets.h, so that the suite-wide log check looks for them too.
constexpr std::string_view kUserA = "user-a";
constexpr std::string_view kPasswordA = "pw-A-7f3k9";
constexpr std::string_view kUserB = "user-b";
constexpr std::string_view kPasswordB = "pw-B-2q8m4";
constexpr std::string_view kToken = "e2e-kube-token-7c1d0e";

constexpr bool Listed(std::string_view user, std::string_view password) {
  for (const auto& c : kTestCredentials) {
    if (c.username == user && c.password == password) return true;
  }
  return false;
}
constexpr bool ListedToken(std::string_view token) {
  for (auto t : kTestTokens) {
    if (t == token) return true;
  }
  return false;
}
static_assert(Listed(kUserA, kPasswordA) && Listed(kUserB, kPasswordB) && ListedToken(kToken),
              "every credential of this suite must be in test_secrets.h");

// kubelet's names. Both registries hold both images, each built for its registry, so the image
// id tells where a pull came from.
constexpr char kLoadImage[] = "faults/app:1";  // small; what the load asks the status of
constexpr char kBigImage[] = "faults/big:1";   // a random payload layer of kPayloadBytes
// Large enough that its blob takes a noticeable time (about half a second here) on loopback.
constexpr size_t kPayloadBytes = 64u << 20;

const CallOptions kQuick{.timeout = 20s};
const CallOptions kPull{.timeout = 180s};
constexpr milliseconds kCallDeadline = 5s;  // per load call: longer means it hung

bool Contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

// ---- the load -----------------------------------------------------------------------------------

// What the callers of one phase got, by call start.
struct Tally {
  std::map<grpc::StatusCode, int> codes;
  int wrong_answers = 0;  // OK, but without what is there (the image, the runtime's name)
  milliseconds slowest{0};
  std::vector<std::string> samples;     // the first two failures of each kind, for messages
  std::map<std::string, int> sampled;   // failures described so far, by kind
  std::map<std::string, int> failures;  // by "CODE: message" (the first 32 different ones)

  int total() const {
    int n = 0;
    for (const auto& [code, count] : codes) n += count;
    return n;
  }
  int Count(grpc::StatusCode code) const {
    auto it = codes.find(code);
    return it == codes.end() ? 0 : it->second;
  }
  int failed() const { return total() - Count(grpc::StatusCode::OK) + wrong_answers; }
  int Failures(const std::string& described) const {
    auto it = failures.find(described);
    return it == failures.end() ? 0 : it->second;
  }
  // Calls that failed with a code outside `allowed`, or answered OK but wrongly.
  int FailedOtherThan(std::initializer_list<grpc::StatusCode> allowed) const {
    int n = wrong_answers;
    for (const auto& [code, count] : codes) {
      if (code != grpc::StatusCode::OK &&
          std::find(allowed.begin(), allowed.end(), code) == allowed.end()) {
        n += count;
      }
    }
    return n;
  }
  std::string Summary() const {
    std::string out = std::to_string(total()) + " calls:";
    for (const auto& [code, count] : codes) {
      out += " " + StatusCodeName(code) + "=" + std::to_string(count);
    }
    out += ", wrong answers " + std::to_string(wrong_answers) + ", slowest " +
           std::to_string(slowest.count()) + " ms";
    for (const auto& s : samples) out += "\n  e.g. " + s;
    return out;
  }
};

// Eight callers (threads, each with its own CriClient) issuing kubelet's everyday calls through
// the shim without pause: Version, ListContainers, ImageStatus by kubelet's name and ListImages,
// in turn, each with a 5 s deadline. Results count in the phase the call started in; EndPhase
// closes a phase once all of its calls have answered.
class LoadGenerator {
 public:
  LoadGenerator(std::string socket, std::string image, int callers = 8)
      : socket_(std::move(socket)), image_(std::move(image)) {
    phases_.emplace_back();
    for (int i = 0; i < callers; ++i) threads_.emplace_back([this, i] { Run(i); });
  }
  ~LoadGenerator() { Stop(); }
  LoadGenerator(const LoadGenerator&) = delete;
  LoadGenerator& operator=(const LoadGenerator&) = delete;

  // Ends the current phase and returns what its calls got (waiting for those still running).
  Tally EndPhase() {
    std::unique_lock lock(mu_);
    size_t ended = current_++;
    phases_.emplace_back();
    bool drained = answered_.wait_for(lock, kCallDeadline + 10s,
                                      [&] { return phases_[ended].in_flight == 0; });
    Tally tally = phases_[ended].tally;
    if (!drained) {
      tally.samples.push_back(std::to_string(phases_[ended].in_flight) +
                              " calls never came back, not even at their deadline");
      tally.wrong_answers += phases_[ended].in_flight;
    }
    return tally;
  }

  // Stops the callers; returns the tally of the phase in progress.
  Tally Stop() {
    if (threads_.empty()) return {};
    stop_ = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
    std::lock_guard lock(mu_);
    return phases_[current_].tally;
  }

 private:
  struct Phase {
    Tally tally;
    int in_flight = 0;
  };

  void Run(int caller) {
    CriClient client(socket_);
    const CallOptions options{.timeout = kCallDeadline};
    for (int turn = caller; !stop_; ++turn) {
      size_t phase;
      {
        std::lock_guard lock(mu_);
        phase = current_;
        ++phases_[phase].in_flight;
      }
      auto started = Clock::now();
      std::string what;
      bool right = true;
      grpc::Status status;
      switch (turn % 4) {
        case 0: {
          what = "Version";
          cri::VersionResponse version;
          status = client.Version("v1", &version, options);
          right = version.runtime_name() == "containerd";
          break;
        }
        case 1: {
          what = "ListContainers";
          crit::ListContainersResponse containers;
          status = client.Call(client.RuntimePath("ListContainers"), crit::ListContainersRequest(),
                               &containers, options);
          break;
        }
        case 2: {
          what = "ImageStatus " + image_;
          cri::ImageStatusResponse response;
          status = client.ImageStatus(image_, &response, options);
          right = response.has_image();
          break;
        }
        default: {
          what = "ListImages";
          cri::ListImagesResponse response;
          status = client.ListImages("", &response, options);
          right = response.images_size() > 0;
          break;
        }
      }
      auto took = std::chrono::duration_cast<milliseconds>(Clock::now() - started);
      std::lock_guard lock(mu_);
      Phase& p = phases_[phase];
      Tally& t = p.tally;
      ++t.codes[status.error_code()];
      t.slowest = std::max(t.slowest, took);
      bool wrong = status.ok() && !right;
      if (wrong) ++t.wrong_answers;
      if (!status.ok() && (t.failures.size() < 32 || t.failures.contains(Describe(status)))) {
        ++t.failures[Describe(status)];
      }
      std::string kind = wrong ? "wrong" : StatusCodeName(status.error_code());
      if ((!status.ok() || wrong) && ++t.sampled[kind] <= 2) {
        t.samples.push_back(what + ": " +
                            (wrong ? "OK but the answer lacks it" : Describe(status)) + " after " +
                            std::to_string(took.count()) + " ms");
      }
      --p.in_flight;
      answered_.notify_all();
    }
  }

  const std::string socket_;
  const std::string image_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable answered_;
  std::deque<Phase> phases_;  // GUARDED_BY(mu_)
  size_t current_ = 0;        // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;
};

// ---- processes and sockets ----------------------------------------------------------------------

// The pid of the process whose command line contains `needle` (a private path of this run), or -1.
pid_t FindPid(const std::string& needle) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    std::string name = entry.path().filename();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::string cmdline = ReadFileIfExists(entry.path().string() + "/cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (Contains(cmdline, needle)) return static_cast<pid_t>(std::stol(name));
  }
  return -1;
}

// VmRSS of `pid` in KiB.
long RssKib(pid_t pid) {
  return ProcStatusField(pid, "VmRSS");
}

// User plus system CPU time of every thread of `pid`.
milliseconds CpuTime(pid_t pid) {
  std::string stat = ReadFileIfExists("/proc/" + std::to_string(pid) + "/stat");
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return milliseconds(0);
  std::istringstream fields(stat.substr(paren + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; fields >> field; ++i) {  // field 3 is the state, right after ")"
    if (i == 14) utime = std::stol(field);
    if (i == 15) {
      stime = std::stol(field);
      break;
    }
  }
  return milliseconds((utime + stime) * 1000 / sysconf(_SC_CLK_TCK));
}

// Descriptors `pid` holds open.
int OpenDescriptors(pid_t pid) {
  std::error_code ec;
  int n = 0;
  for ([[maybe_unused]] const auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    ++n;
  }
  return n;
}

// Connections accepted on the unix socket `path` and still open: in /proc/net/unix the
// accepting side of a connection carries the listening socket's path (state 03, connected).
int AcceptedConnections(const std::string& path) {
  std::istringstream table(ReadFileIfExists("/proc/net/unix"));
  int n = 0;
  for (std::string line; std::getline(table, line);) {
    std::istringstream fields(line);
    std::string num, refs, protocol, flags, type, state, inode, bound;
    if (fields >> num >> refs >> protocol >> flags >> type >> state >> inode >> bound &&
        bound == path && state == "03") {
      ++n;
    }
  }
  return n;
}

// The soft "Max open files" of `pid` as /proc shows it, for messages.
std::string OpenFilesLimit(pid_t pid) {
  std::istringstream limits(ReadFileIfExists("/proc/" + std::to_string(pid) + "/limits"));
  for (std::string line; std::getline(limits, line);) {
    if (line.starts_with("Max open files")) return line;
  }
  return "?";
}

// A raw stream connection to a unix socket, for bytes no gRPC client would send (or none).
class RawConnection {
 public:
  // Connects without blocking: nullptr when the socket's backlog is full or nobody listens.
  static std::unique_ptr<RawConnection> Open(const std::string& path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return nullptr;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), std::min(path.size() + 1, sizeof addr.sun_path));
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      close(fd);
      return nullptr;
    }
    return std::unique_ptr<RawConnection>(new RawConnection(fd));
  }
  ~RawConnection() { close(fd_); }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  // Writes everything (waiting for room up to 5 s); false when the peer is gone.
  bool Send(std::string_view bytes) {
    auto deadline = Clock::now() + 5s;
    while (!bytes.empty()) {
      ssize_t n = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n > 0) {
        bytes.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
      if (Clock::now() > deadline) return false;
      pollfd p{.fd = fd_, .events = POLLOUT, .revents = 0};
      poll(&p, 1, 50);
    }
    return true;
  }

  // Reads until the peer closes (true) or `timeout` passes (false); what arrived is kept.
  bool WaitClosed(milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    char buffer[16384];
    while (Clock::now() < deadline) {
      ssize_t n = recv(fd_, buffer, sizeof buffer, 0);
      if (n == 0) return true;
      if (n > 0) {
        received_.append(buffer, static_cast<size_t>(n));
        continue;
      }
      if (errno == ECONNRESET || errno == EPIPE) return true;
      if (errno != EAGAIN && errno != EINTR) return true;
      pollfd p{.fd = fd_, .events = POLLIN, .revents = 0};
      poll(&p, 1, 20);
    }
    return false;
  }

  // The HTTP/2 frame types the peer sent (7 = GOAWAY), from what WaitClosed read.
  std::vector<int> FrameTypes() const {
    std::vector<int> types;
    for (size_t at = 0; at + 9 <= received_.size();) {
      auto byte = [&](size_t i) { return static_cast<unsigned char>(received_[at + i]); };
      size_t length = byte(0) << 16 | byte(1) << 8 | byte(2);
      types.push_back(byte(3));
      at += 9 + length;
    }
    return types;
  }

 private:
  explicit RawConnection(int fd) : fd_(fd) {}
  int fd_;
  std::string received_;
};

// The HTTP/2 client connection preface, and a frame whose length field may lie.
constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
std::string Frame(uint32_t length, uint8_t type, uint8_t flags, uint32_t stream,
                  std::string_view payload) {
  std::string f;
  f += static_cast<char>(length >> 16 & 0xff);
  f += static_cast<char>(length >> 8 & 0xff);
  f += static_cast<char>(length & 0xff);
  f += static_cast<char>(type);
  f += static_cast<char>(flags);
  for (int shift : {24, 16, 8, 0}) f += static_cast<char>(stream >> shift & 0xff);
  return f + std::string(payload);
}

std::string RandomBytes(size_t n, std::mt19937_64& random) {
  std::string bytes(n, '\0');
  for (auto& c : bytes) c = static_cast<char>(random());
  return bytes;
}

// ---- registry and runtime observations ----------------------------------------------------------

// Requests for `path` the registry has begun serving: docker-registry (with authentication on,
// as here) logs "authorized request" when a request starts, and its access-log line only when
// the answer is complete.
int RequestsBegun(const Registry& registry, const std::string& path) {
  std::istringstream log(registry.LogText());
  int n = 0;
  for (std::string line; std::getline(log, line);) {
    if (Contains(line, "msg=\"authorized request\"") && Contains(line, "method=GET") &&
        Contains(line, "http.request.uri=\"" + path + "\"")) {
      ++n;
    }
  }
  return n;
}

// Bytes sent by each finished GET of `path` (access log: "GET PATH HTTP/1.1" STATUS BYTES ...),
// in order. A transfer the client abandoned shows fewer bytes than the blob has; one the registry
// died in does not show at all.
std::vector<long> Transfers(const Registry& registry, const std::string& path) {
  std::istringstream log(registry.LogText());
  std::string needle = "\"GET " + path + " HTTP/1.1\" ";
  std::vector<long> sizes;
  for (std::string line; std::getline(log, line);) {
    size_t at = line.find(needle);
    if (at == std::string::npos) continue;
    std::istringstream rest(line.substr(at + needle.size()));
    int status = 0;
    long bytes = 0;
    if (rest >> status >> bytes) sizes.push_back(bytes);
  }
  return sizes;
}

// Bytes containerd holds of downloads in progress (its content store's ingest files).
uintmax_t IngestBytes(const Containerd& containerd) {
  std::error_code ec;
  uintmax_t total = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(
           containerd.dir() + "/root/io.containerd.content.v1.content/ingest", ec)) {
    std::error_code size_ec;
    if (entry.path().filename() == "data") total += entry.file_size(size_ec);
  }
  return total;
}

// ---- the fixture --------------------------------------------------------------------------------

struct ShimSetup {
  bool b_first = false;     // registry B as the primary, A as the backup
  bool backup = true;       // list the other registry after the primary
  bool config_map = false;  // merge the ConfigMap of the Kubernetes API test server
  // "SOFT:HARD" RLIMIT_NOFILE the shim starts with (set by prlimit); "" = the test's own.
  std::string nofile = {};
};

// The registries and their images are shared by the suite; each test has its own containerd and
// shim (tests kill the one and choke the other), and TearDown stops them and reads the shim's
// log for crashes and secrets.
class FaultsE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    try {
      auto started = Clock::now();
      RaiseOwnDescriptorLimit();
      a_ = new Registry({.host_name = "registry-a.test",
                         .username = std::string(kUserA),
                         .password = std::string(kPasswordA)});
      b_ = new Registry({.host_name = "registry-b.test",
                         .username = std::string(kUserB),
                         .password = std::string(kPasswordB)});
      app_a_ = PushImage(*a_, kLoadImage).image_id;
      app_b_ = PushImage(*b_, kLoadImage).image_id;
      TestImage big_a = BuildLargeTestImage(a_->host_name(), kPayloadBytes);
      TestImage big_b = BuildLargeTestImage(b_->host_name(), kPayloadBytes);
      PushImage(*a_, kBigImage, big_a);
      PushImage(*b_, kBigImage, big_b);
      big_a_ = big_a.image_id;
      big_b_ = big_b.image_id;
      payload_digest_ = big_a.payload_digest;
      payload_size_ = static_cast<long>(big_a.payload_blob_size);
      pki_dir_ = new TempDir("flt-pki");
      pki_ = new TestPki(MakeTestPki(pki_dir_->path()));
      std::cerr << "[suite] registries and images (payload blob " << payload_size_
                << " bytes) ready in "
                << std::chrono::duration_cast<milliseconds>(Clock::now() - started).count()
                << " ms\n";
    } catch (const std::exception& e) {
      setup_error_ = e.what();
    }
  }

  static void TearDownTestSuite() {
    delete pki_;
    delete pki_dir_;
    delete b_;
    delete a_;
    pki_ = nullptr;
    pki_dir_ = nullptr;
    b_ = nullptr;
    a_ = nullptr;
  }

  // Idle-connection tests hold more than a thousand sockets in this process.
  static void RaiseOwnDescriptorLimit() {
    rlimit limit{};
    getrlimit(RLIMIT_NOFILE, &limit);
    rlim_t want = 8192;
    if (limit.rlim_cur >= want) return;
    limit.rlim_cur = want;
    limit.rlim_max = std::max(limit.rlim_max, want);  // root may raise the hard limit
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      std::cerr << "[suite] cannot raise RLIMIT_NOFILE to " << want << ": " << strerror(errno)
                << "\n";
    }
  }

  void SetUp() override {
    if (!setup_error_.empty()) GTEST_FAIL() << "suite setup failed: " << setup_error_;
    if (!a_->Running()) a_->Start();  // a test before may have killed it
    if (!b_->Running()) b_->Start();
    dir_ = std::make_unique<TempDir>("flt");
    containerd_ = std::make_unique<Containerd>();
    direct_ = std::make_unique<CriClient>(containerd_->Socket());
  }

  void TearDown() override {
    load_.reset();
    if (shim_) {
      EXPECT_TRUE(ShimAlive()) << "the shim died during the test";
      ExitStatus exit = shim_->Stop();
      EXPECT_TRUE(exit.Success()) << "shim: " << exit.ToString() << "\n" << TailLines(shim_->Log());
      std::string log = shim_->Log();
      for (const char* crash : {"AddressSanitizer", "LeakSanitizer", "runtime error",
                                "terminate called", "Segmentation fault"}) {
        EXPECT_FALSE(Contains(log, crash)) << crash << " in the shim's log:\n" << TailLines(log);
      }
      for (const auto& secret : AllTestSecrets()) {
        EXPECT_FALSE(Contains(log, secret))
            << "a secret (" << secret.substr(0, 4) << "...) is in the shim's log";
      }
    }
    shim_.reset();
    api_.reset();
    direct_.reset();
    containerd_.reset();
  }

  std::string ConfigYaml(const ShimSetup& setup, const std::string& comment = "") const {
    const Registry& first = setup.b_first ? *b_ : *a_;
    const Registry& second = setup.b_first ? *a_ : *b_;
    std::string yaml = (comment.empty() ? "" : "# " + comment + "\n") +
                       "shim: " + dir_->File("shim.sock") + "\ncri: " + containerd_->Socket() +
                       "\naddress: " + first.Address() + "\nauth: \"" + first.username() + ":" +
                       first.password() + "\"\n";
    if (setup.backup) {
      yaml += "registries:\n- address: " + second.Address() + "\n  auth: \"" + second.username() +
              ":" + second.password() + "\"\n";
    }
    return yaml + "timeout: 5m\nreloadInterval: 1h\nstateDir: " + dir_->File("state") +
           "\nconfigMap:\n  enabled: " + (setup.config_map ? "true" : "false") +
           "\nmetricsAddress: \"\"\n";
  }

  // Starts this test's shim and pulls kLoadImage through it, so the load's status calls find it.
  // Throws (failing the test) when either fails.
  void StartShim(const ShimSetup& setup, std::map<std::string, std::string> env = {}) {
    config_path_ = dir_->File("config.yaml");
    shim_log_path_ = dir_->File("shim.log");
    WriteFile(config_path_, ConfigYaml(setup), 0600);
    std::string binary;
    if (!setup.nofile.empty()) {
      binary = dir_->File("shim-with-limit.sh");
      WriteFile(binary,
                "#!/bin/sh\nexec prlimit --nofile=" + setup.nofile + " -- '" + ShimBinaryPath() +
                    "' \"$@\"\n",
                0755);
    }
    shim_ = std::make_unique<ShimProcess>(ShimOptions{.config_path = config_path_,
                                                      .socket_path = dir_->File("shim.sock"),
                                                      .env = std::move(env),
                                                      .log_path = shim_log_path_,
                                                      .binary = binary});
    shim_->Start();
    shim_pid_ = shim_->pid();
    CriClient client(shim_->Socket());
    std::string ref;
    grpc::Status status = client.PullImage(kLoadImage, nullptr, &ref, kPull);
    if (!status.ok()) {
      throw std::runtime_error("pull of " + std::string(kLoadImage) + " through the new shim: " +
                               Describe(status) + "\n" + TailLines(shim_->Log()));
    }
  }

  void StartLoad() { load_ = std::make_unique<LoadGenerator>(shim_->Socket(), kLoadImage); }

  // Running, the same process as started, and no crash report in its log.
  ::testing::AssertionResult ShimAlive() {
    if (!shim_->Running()) {
      return ::testing::AssertionFailure() << "the shim exited:\n" << TailLines(shim_->Log());
    }
    if (shim_->pid() != shim_pid_) return ::testing::AssertionFailure() << "another shim process";
    std::string log = shim_->Log();
    for (const char* crash : {"AddressSanitizer", "runtime error", "terminate called"}) {
      if (Contains(log, crash)) {
        return ::testing::AssertionFailure() << crash << " in its log:\n" << TailLines(log);
      }
    }
    return ::testing::AssertionSuccess();
  }

  // Present in containerd under `name` (asked directly, not through the shim)?
  bool StoredAs(const std::string& name) {
    cri::ImageStatusResponse response;
    return direct_->ImageStatus(name, &response, kQuick).ok() && response.has_image();
  }

  // Held under kubelet's name (docker.io/<path>) with `registry_name` as the name it was pulled
  // as (the shim's label on containerd's record): the pull went to that registry.
  bool PulledFrom(const std::string& registry_name) {
    std::string path = registry_name.substr(registry_name.find('/') + 1);
    return direct_->PulledAs("docker.io/" + path) == registry_name;
  }

  // Replaces the configuration file atomically (write aside, then rename over it) or in place
  // (truncate and write, as an editor without backup files does).
  void ReplaceConfig(const std::string& content, bool by_rename) {
    if (by_rename) {
      std::string aside = config_path_ + ".new";
      WriteFile(aside, content, 0600);
      ASSERT_EQ(std::rename(aside.c_str(), config_path_.c_str()), 0) << strerror(errno);
    } else {
      WriteFile(config_path_, content, 0600);
    }
  }

  // Lines of the shim's log holding `needle`. Under load the log grows by thousands of lines a
  // second, so only what was appended since the last call for this needle is read.
  int LogCount(const std::string& needle) {
    LogScan& scan = log_scans_[needle];
    std::ifstream in(shim_log_path_, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(scan.offset));
    for (std::string line; std::getline(in, line) && !in.eof();) {
      scan.offset += line.size() + 1;  // a line still being written is read next time
      scan.count += Contains(line, needle) ? 1 : 0;
    }
    return scan.count;
  }

  static std::string BlobPath(const std::string& repo) {
    return "/v2/" + repo + "/blobs/" + payload_digest_;
  }

  // What a test measured, for the record (ctest -V shows it).
  static void Figures(const std::string& text) { std::cout << "[figures] " << text << "\n"; }

  static Registry* a_;
  static Registry* b_;
  static std::string app_a_, app_b_, big_a_, big_b_;
  static std::string payload_digest_;
  static long payload_size_;
  static TempDir* pki_dir_;
  static TestPki* pki_;
  static std::string setup_error_;

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<Containerd> containerd_;
  std::unique_ptr<CriClient> direct_;  // containerd's own socket
  std::unique_ptr<KubeApiServer> api_;
  std::unique_ptr<ShimProcess> shim_;
  pid_t shim_pid_ = -1;
  std::string config_path_;
  std::string shim_log_path_;
  struct LogScan {
    size_t offset = 0;
    int count = 0;
  };
  std::map<std::string, LogScan> log_scans_;
  std::unique_ptr<LoadGenerator> load_;  // stopped first in TearDown
};

Registry* FaultsE2E::a_ = nullptr;
Registry* FaultsE2E::b_ = nullptr;
std::string FaultsE2E::app_a_, FaultsE2E::app_b_, FaultsE2E::big_a_, FaultsE2E::big_b_;
std::string FaultsE2E::payload_digest_;
long FaultsE2E::payload_size_ = 0;
TempDir* FaultsE2E::pki_dir_ = nullptr;
TestPki* FaultsE2E::pki_ = nullptr;
std::string FaultsE2E::setup_error_;

// 1. containerd is SIGKILLed under load and started again.
// Callers saw: OK before; while containerd was gone, UNAVAILABLE and no other code, each answer
// well within the 5 s deadline; while it started up, its own "server is not initialized yet"
// (UNKNOWN), passed on as it was; OK again once it was up. Lost: nothing. The shim process, its
// socket and the callers' connections stayed, and after a short settle every call succeeds.
TEST_F(FaultsE2E, ContainerdKilledAndRestartedUnderLoad) {
  StartShim({});
  StartLoad();
  std::this_thread::sleep_for(1500ms);
  Tally before = load_->EndPhase();

  pid_t runtime = FindPid(containerd_->config_path());
  ASSERT_GT(runtime, 0) << "containerd's pid not found";
  ASSERT_EQ(kill(runtime, SIGKILL), 0) << strerror(errno);
  ASSERT_TRUE(WaitUntil([&] { return !containerd_->Running(); }, 5s));
  std::this_thread::sleep_for(1500ms);  // the callers keep calling into the gap
  Tally dead = load_->EndPhase();
  auto restart = Clock::now();
  containerd_->Start();  // returns once containerd answers CRI Version
  auto restart_took = std::chrono::duration_cast<milliseconds>(Clock::now() - restart);
  Tally starting = load_->EndPhase();
  std::this_thread::sleep_for(1s);  // reconnects settle
  Tally settling = load_->EndPhase();
  std::this_thread::sleep_for(2s);
  Tally after = load_->EndPhase();

  const std::string not_ready = "UNKNOWN: server is not initialized yet";  // containerd's own
  Figures("containerd kill: before " + before.Summary() + "; dead for 1.5 s: " + dead.Summary() +
          "; starting for " + std::to_string(restart_took.count()) + " ms: " + starting.Summary() +
          "; settling: " + settling.Summary() + "; after: " + after.Summary());
  EXPECT_EQ(before.failed(), 0) << before.Summary();
  EXPECT_GT(before.total(), 100) << "the load barely ran: " << before.Summary();
  EXPECT_EQ(dead.FailedOtherThan({grpc::StatusCode::UNAVAILABLE}), 0) << dead.Summary();
  EXPECT_GT(dead.Count(grpc::StatusCode::UNAVAILABLE), 0)
      << "no caller noticed containerd was gone: " << dead.Summary();
  EXPECT_LT(dead.slowest, kCallDeadline) << "a call in the gap hung: " << dead.Summary();
  EXPECT_EQ(
      starting.FailedOtherThan({grpc::StatusCode::UNAVAILABLE}) - starting.Failures(not_ready), 0)
      << starting.Summary();
  EXPECT_LT(starting.slowest, kCallDeadline) << starting.Summary();
  EXPECT_EQ(settling.FailedOtherThan({grpc::StatusCode::UNAVAILABLE}), 0) << settling.Summary();
  EXPECT_EQ(after.failed(), 0) << after.Summary();
  EXPECT_GT(after.total(), 100) << after.Summary();
  EXPECT_TRUE(ShimAlive());
}

// 2. The primary registry is SIGKILLed while it sends the payload blob of a pull.
// Callers saw: the pull succeed, from the backup (stored under the backup's name), and the
// other callers OK throughout. Lost: nothing; the half-sent blob was fetched again from B.
TEST_F(FaultsE2E, RegistryKilledMidBlobTheBackupCompletesThePull) {
  StartShim({});
  StartLoad();
  const std::string blob = BlobPath("faults/big");
  int begun_before = RequestsBegun(*a_, blob);
  size_t transfers_before = Transfers(*a_, blob).size();
  pid_t registry = FindPid(a_->dir() + "/config.yml");
  ASSERT_GT(registry, 0) << "registry A's pid not found";

  grpc::Status status;
  std::string ref;
  auto started = Clock::now();
  std::thread kubelet([&] {
    CriClient client(shim_->Socket());
    status = client.PullImage(kBigImage, nullptr, &ref, kPull);
  });
  // Killed once A has begun the blob and containerd holds some of it, long before the end.
  uintmax_t at_kill = 0;
  bool mid_blob = WaitUntil(
      [&] {
        if (RequestsBegun(*a_, blob) == begun_before) return false;
        at_kill = IngestBytes(*containerd_);
        return at_kill >= (1u << 20);
      },
      60s, 2ms);
  if (mid_blob) kill(registry, SIGKILL);
  auto kill_at = Clock::now() - started;
  kubelet.join();
  auto took = Clock::now() - started;
  a_->Stop();  // reaps it
  Tally load = load_->EndPhase();

  Figures("registry kill mid-blob: killed " +
          std::to_string(std::chrono::duration_cast<milliseconds>(kill_at).count()) +
          " ms into the pull with " + std::to_string(at_kill) + " of " +
          std::to_string(payload_size_) + " blob bytes in containerd; pull " + Describe(status) +
          " after " + std::to_string(std::chrono::duration_cast<milliseconds>(took).count()) +
          " ms; load " + load.Summary());
  ASSERT_TRUE(mid_blob) << "registry A never began the blob\n" << TailLines(a_->LogText(), 10);
  EXPECT_LT(at_kill, static_cast<uintmax_t>(payload_size_));
  for (size_t i = transfers_before; i < Transfers(*a_, blob).size(); ++i) {
    EXPECT_LT(Transfers(*a_, blob)[i], payload_size_) << "A finished sending the blob: not mid-way";
  }
  ASSERT_TRUE(status.ok()) << Describe(status) << "\n" << TailLines(shim_->Log());
  EXPECT_EQ(ref, big_b_) << "the image does not come from registry B";
  EXPECT_TRUE(PulledFrom(b_->ImageName(kBigImage)));
  EXPECT_FALSE(PulledFrom(a_->ImageName(kBigImage)));
  EXPECT_TRUE(Contains(shim_->Log(), "-> " + b_->ImageName(kBigImage) + " via")) << shim_->Log();
  EXPECT_EQ(load.failed(), 0) << load.Summary();
  EXPECT_TRUE(ShimAlive());
}

// 3. The configuration file is replaced 30 times with garbage and then with a valid change, by
// rename and in place, under load.
// Callers saw: OK for every call, throughout. Lost: nothing; each garbage version was rejected
// (and logged), each valid one applied, and the last valid one is in force: it names registry B
// first, and the next pull comes from B.
TEST_F(FaultsE2E, ConfigFileChurnWithGarbageUnderLoad) {
  StartShim({});
  StartLoad();
  std::mt19937_64 random(20240501);
  auto garbage = [&](int round) -> std::string {
    std::string tag = "# round " + std::to_string(round) + "\n";
    switch (round % 6) {
      case 0:
        return RandomBytes(4096, random);
      case 1:
        return tag + "address: [unclosed\n  auth: {\n";
      case 2: {
        std::string yaml = ConfigYaml({}, "round " + std::to_string(round));
        return yaml.replace(yaml.find("timeout: 5m"), 11, "timeout: soon");
      }
      case 3:
        return tag;  // an empty document: no address
      case 4:
        return tag + "address: ftp://registry-a.test\n";
      default:
        return tag + "- a list\n- not a map\n";
    }
  };
  constexpr int kRounds = 30;
  const int rejected_at_start = LogCount("config reload rejected");
  const int reloaded_at_start = LogCount("config reloaded");
  auto started = Clock::now();
  for (int round = 0; round < kRounds; ++round) {
    bool by_rename = round % 2 == 0;
    int rejected = LogCount("config reload rejected");
    ReplaceConfig(garbage(round), by_rename);
    ASSERT_TRUE(WaitUntil([&] { return LogCount("config reload rejected") > rejected; }, 10s))
        << "round " << round << ": garbage not rejected\n"
        << TailLines(shim_->Log());
    // Alternating registry order, so each valid version is a change; the last names B first.
    bool b_first = round % 2 == 1;
    int reloaded = LogCount("config reloaded");
    ReplaceConfig(ConfigYaml({.b_first = b_first}, "round " + std::to_string(round)), by_rename);
    ASSERT_TRUE(WaitUntil([&] { return LogCount("config reloaded") > reloaded; }, 10s))
        << "round " << round << ": valid config not applied\n"
        << TailLines(shim_->Log());
  }
  auto churn = Clock::now() - started;
  Tally load = load_->EndPhase();
  const int rejected = LogCount("config reload rejected");
  const int reloaded = LogCount("config reloaded");

  std::string ref;
  CriClient kubelet(shim_->Socket());
  grpc::Status status = kubelet.PullImage(kLoadImage, nullptr, &ref, kPull);
  Tally after = load_->EndPhase();

  Figures("config churn: " + std::to_string(kRounds) + " rounds in " +
          std::to_string(std::chrono::duration_cast<milliseconds>(churn).count()) + " ms, " +
          std::to_string(rejected - rejected_at_start) + " rejections and " +
          std::to_string(reloaded - reloaded_at_start) + " reloads logged; load " + load.Summary());
  EXPECT_EQ(load.failed(), 0) << load.Summary();
  EXPECT_GT(load.total(), 100) << load.Summary();
  EXPECT_EQ(after.failed(), 0) << after.Summary();
  EXPECT_GE(rejected - rejected_at_start, kRounds);
  EXPECT_GE(reloaded - reloaded_at_start, kRounds);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(ref, app_b_) << "the last valid configuration (B first) is not in force";
  EXPECT_TRUE(PulledFrom(b_->ImageName(kLoadImage)));
  EXPECT_TRUE(ShimAlive());
}

// 4. The Kubernetes API server flaps (five stops and starts) under load, while its ConfigMap
// names registry B.
// Callers saw: OK for every call, throughout. Lost: nothing; the configuration merged from the
// ConfigMap stayed in force through the outages (a pull during each went to B), and once the
// API was back a change to the ConfigMap still reached the shim.
TEST_F(FaultsE2E, KubernetesApiFlapsUnderLoad) {
  auto sealos = [](const Registry& r) {
    return "version: v1\nsealos:\n  address: " + r.Address() +
           "\n  auth: {username: " + r.username() + ", password: \"" + r.password() + "\"}\n";
  };
  api_ = std::make_unique<KubeApiServer>(KubeApiServerOptions{
      .cert_path = pki_->server_cert, .key_path = pki_->server_key, .token = std::string(kToken)});
  api_->SetData({{"registries.yaml", sealos(*b_)}});
  api_->Start();
  WriteFile(dir_->File("kubeconfig"),
            MakeKubeconfig(api_->Url(), pki_->ca_pem, std::string(kToken)), 0600);
  // The ConfigMap's address replaces the local primary (A); without a local backup, a pull that
  // reaches B can only have come from the ConfigMap.
  StartShim({.backup = false, .config_map = true}, {{"KUBECONFIG", dir_->File("kubeconfig")},
                                                    {"HOME", dir_->path()},
                                                    {"SHIM_KUBE_TIME_SCALE", "0.05"}});
  CriClient kubelet(shim_->Socket());
  auto pull = [&] {
    std::string ref;
    grpc::Status status = kubelet.PullImage(kLoadImage, nullptr, &ref, kPull);
    return status.ok() ? ref : Describe(status);
  };
  ASSERT_TRUE(WaitUntil([&] { return pull() == app_b_; }, 20s, 100ms))
      << "the ConfigMap's registry B never served: " << pull() << "\n"
      << TailLines(shim_->Log());
  ASSERT_TRUE(api_->WaitForOpenWatches(1, 10s));
  StartLoad();

  constexpr int kFlaps = 5;
  int pulls_from_b = 0;  // pulls made while the API was down
  std::string last_pull;
  for (int i = 0; i < kFlaps; ++i) {
    api_->Stop();
    auto down = Clock::now();
    last_pull = pull();
    pulls_from_b += last_pull == app_b_ ? 1 : 0;
    std::this_thread::sleep_for(700ms - (Clock::now() - down));
    api_->Start();
    std::this_thread::sleep_for(700ms);
  }
  Tally flapping = load_->EndPhase();
  bool noticed = Contains(shim_->Log(), "ConfigMap sync: unreachable");

  // The sync recovered: a change made now reaches new pulls.
  api_->SetData({{"registries.yaml", sealos(*a_)}});
  bool recovered = WaitUntil([&] { return pull() == app_a_; }, 30s, 200ms);
  Tally after = load_->EndPhase();

  Figures("kube API flapping: " + std::to_string(kFlaps) + " outages of 700 ms; load " +
          flapping.Summary() + "; after " + after.Summary() + "; API requests " +
          std::to_string(api_->counts().total));
  EXPECT_EQ(flapping.failed(), 0) << flapping.Summary();
  EXPECT_GT(flapping.total(), 100) << flapping.Summary();
  EXPECT_EQ(pulls_from_b, kFlaps) << "the merged configuration was lost while the API was down; "
                                  << "last pull: " << last_pull;
  EXPECT_TRUE(noticed) << "the shim never saw the API down: the flaps proved nothing\n"
                       << TailLines(shim_->Log());
  EXPECT_TRUE(recovered) << "a ConfigMap change after the flaps never reached the shim\n"
                         << TailLines(shim_->Log());
  EXPECT_EQ(after.failed(), 0) << after.Summary();
  EXPECT_TRUE(ShimAlive());
}

// 5. kubelet cancels a pull of the large image while registry A is half way through its blob.
// A cancel, not a deadline: a deadline would also reach containerd as grpc-timeout and stop its
// pull by itself, proving nothing about the shim. It is sent once containerd holds the first MiB
// of the blob; a fixed delay (CallOptions.cancel_after) cannot be aimed at the blob on this
// loaded machine, where the time to reach it ranged from 0.2 s to 2.3 s.
// Callers saw: CANCELLED for the pull, OK for everyone else. Lost: only the cancelled pull;
// containerd stopped it ("context canceled"), registry A stopped sending the blob, no failover
// to B was attempted, and nothing was stored.
TEST_F(FaultsE2E, KubeletCancelsAPullHalfWay) {
  StartShim({});
  StartLoad();
  const std::string blob = BlobPath("faults/big");
  const int begun = RequestsBegun(*a_, blob);
  const size_t transfers = Transfers(*a_, blob).size();
  const int backup_asked = b_->CountRequests("HEAD", "/v2/faults/big/manifests/1");
  const size_t runtime_log_start = containerd_->LogText().size();

  CriAsyncClient kubelet(shim_->Socket(), 1);
  cri::PullImageRequest request;
  request.mutable_image()->set_image(kBigImage);
  auto started = Clock::now();
  auto pull = kubelet.Start({"/runtime.v1.ImageService/PullImage", request.SerializeAsString()});
  uintmax_t at_cancel = 0;
  bool mid_blob = WaitUntil(
      [&] {
        if (RequestsBegun(*a_, blob) == begun) return false;
        at_cancel = IngestBytes(*containerd_);
        return at_cancel >= (1u << 20);
      },
      60s, 2ms);
  pull->Cancel();
  auto cancelled_at = std::chrono::duration_cast<milliseconds>(Clock::now() - started);
  // gRPC answers a cancelled call itself at once; what the shim and containerd did is below.
  grpc::Status status = pull->Wait();

  bool runtime_cancelled = WaitUntil(
      [&] {
        std::string log = containerd_->LogText();
        return Contains(log.substr(std::min(log.size(), runtime_log_start)), "context canceled");
      },
      10s, 50ms);
  // A's transfer ends short once containerd hangs up.
  bool transfer_ended = WaitUntil([&] { return Transfers(*a_, blob).size() > transfers; }, 10s);
  std::this_thread::sleep_for(1s);  // room for a pull that would go on in the background
  std::vector<long> sent = Transfers(*a_, blob);
  Tally load = load_->EndPhase();

  Figures("cancelled pull: cancelled " + std::to_string(cancelled_at.count()) +
          " ms into the pull with " + std::to_string(at_cancel) + " blob bytes in containerd; " +
          "the caller saw " + Describe(status) + "; A sent " +
          (sent.size() > transfers ? std::to_string(sent.back()) : std::string("(no end logged)")) +
          " of " + std::to_string(payload_size_) + " bytes; load " + load.Summary());
  ASSERT_TRUE(mid_blob) << "registry A never began the blob\n" << TailLines(a_->LogText(), 10);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << Describe(status);
  EXPECT_TRUE(runtime_cancelled) << TailLines(containerd_->LogText(), 15);
  EXPECT_TRUE(transfer_ended) << "A is still sending the blob";
  for (size_t i = transfers; i < sent.size(); ++i) {
    EXPECT_LT(sent[i], payload_size_) << "A sent the whole blob: the pull went on";
  }
  EXPECT_TRUE(WaitUntil([&] { return LogCount("cancelled by the caller") == 1; }, 5s))
      << TailLines(shim_->Log());
  EXPECT_EQ(b_->CountRequests("HEAD", "/v2/faults/big/manifests/1"), backup_asked)
      << "the shim failed over to B after the caller had gone";
  EXPECT_FALSE(StoredAs(a_->ImageName(kBigImage)));
  EXPECT_FALSE(StoredAs(b_->ImageName(kBigImage)));
  EXPECT_FALSE(StoredAs(kBigImage));
  EXPECT_EQ(load.failed(), 0) << load.Summary();
  EXPECT_TRUE(ShimAlive());
}

// The calls of one burst: Version and ImageStatus by kubelet's name, alternating.
std::vector<CriAsyncClient::Call> BurstCalls(int count) {
  return VersionAndImageStatusCalls(count, kLoadImage);
}

// Calls of a BurstCalls burst that failed or answered wrongly, with the first few described.
int BadAnswers(const CriAsyncClient::Result& result, std::string* samples) {
  int bad = 0;
  for (size_t i = 0; i < result.statuses.size(); ++i) {
    bool right = false;
    if (result.statuses[i].ok() && i % 2 == 0) {
      cri::VersionResponse version;
      right =
          version.ParseFromString(result.responses[i]) && version.runtime_name() == "containerd";
    } else if (result.statuses[i].ok()) {
      cri::ImageStatusResponse status;
      right = status.ParseFromString(result.responses[i]) && status.has_image();
    }
    if (right) continue;
    if (++bad <= 3)
      *samples += "\n  call " + std::to_string(i) + ": " + Describe(result.statuses[i]);
  }
  return bad;
}

std::string Summary(const CriAsyncClient::Result& result) {
  std::string out = std::to_string(result.statuses.size()) + " calls in " +
                    std::to_string(result.took.count()) + " ms:";
  for (const auto& [code, count] : result.Codes()) {
    out += " " + StatusCodeName(code) + "=" + std::to_string(count);
  }
  return out;
}

// 6a. Bursts of 2,000 concurrent calls over 20 connections of their own, the first while
// raw clients write garbage on the socket (random bytes; a partial HTTP/2 preface; a valid
// preface followed by malformed frames) and others connect and never send a byte; the load runs
// throughout.
// Callers saw: every well-formed call OK with a right answer, in every burst and in the load.
// Lost: nothing. The shim closed the connections that sent garbage (with a GOAWAY where they
// had begun as HTTP/2), released their descriptors, and its memory stayed bounded: under 32 MiB
// more after the first burst and in all, and once the garbage was gone it stopped growing (see
// below).
TEST_F(FaultsE2E, FloodOfCallsGarbageAndSilentClients) {
  // ASan parks freed memory in a quarantine (256 MiB by default) that would read as growth; a
  // small one keeps the RSS about the shim's own memory. Other builds ignore the variable.
  const char* inherited = getenv("ASAN_OPTIONS");
  std::string asan = inherited != nullptr && *inherited != '\0' ? std::string(inherited) + ":" : "";
  StartShim({}, {{"ASAN_OPTIONS", asan + "quarantine_size_mb=4"}});
  StartLoad();
  constexpr int kConnections = 20;
  constexpr int kCalls = 2000;
  CriAsyncClient burst(shim_->Socket(), kConnections);
  ASSERT_TRUE(burst.Connect(10s));
  const auto calls = BurstCalls(kCalls);
  // The baseline is taken after a first, smaller burst: what that allocates for good (session
  // buffers, pools) is not growth.
  auto warm_up = burst.RunAll(BurstCalls(kCalls / 4), 60s);
  ASSERT_EQ(warm_up.Ok(), kCalls / 4) << Summary(warm_up);
  std::this_thread::sleep_for(300ms);
  const long rss_before = RssKib(shim_pid_);
  const int fds_before = OpenDescriptors(shim_pid_);

  std::vector<std::unique_ptr<RawConnection>> must_close;  // sent garbage: the shim hangs up
  std::vector<RawConnection*> bad_frames_sent;  // of those, the ones that spoke HTTP/2 first
  std::vector<std::unique_ptr<RawConnection>> may_linger;  // half a preface, or nothing at all
  std::mt19937_64 random(42);
  std::string settings = Frame(0, 0x4, 0, 0, "");
  std::vector<std::string> bad_frames = {
      Frame(4, 0x0, 0, 0, "data"),                          // DATA on stream 0
      Frame(16, 0x1, 0x4, 1, std::string(16, '\x80')),      // HEADERS with HPACK index 0
      Frame(0xffffff, 0x0, 0, 1, RandomBytes(64, random)),  // larger than any allowed frame
      Frame(4, 0x8, 0, 0, std::string(4, '\0')),            // WINDOW_UPDATE of 0
      Frame(5, 0x4, 0, 0, RandomBytes(5, random)),          // SETTINGS not a multiple of 6
      Frame(3, 0x6, 0, 0, "abc"),                           // PING of 3 bytes
      RandomBytes(512, random),                             // no frame at all
  };
  std::thread garbage([&] {
    for (int i = 0; i < 14; ++i) {
      if (auto c = RawConnection::Open(shim_->Socket())) {
        c->Send(RandomBytes(16384, random));
        must_close.push_back(std::move(c));
      }
      if (auto c = RawConnection::Open(shim_->Socket())) {
        c->Send(std::string(kPreface) + settings + bad_frames[i % bad_frames.size()]);
        bad_frames_sent.push_back(c.get());
        must_close.push_back(std::move(c));
      }
      if (auto c = RawConnection::Open(shim_->Socket())) {
        c->Send(kPreface.substr(0, 1 + i % (kPreface.size() - 1)));
        may_linger.push_back(std::move(c));
      }
      for (int j = 0; j < 2; ++j) {
        if (auto c = RawConnection::Open(shim_->Socket())) may_linger.push_back(std::move(c));
      }
      std::this_thread::sleep_for(20ms);
    }
  });
  auto first = burst.RunAll(calls, 60s);
  garbage.join();
  const long rss_first = RssKib(shim_pid_);
  int not_closed = 0;
  for (auto& c : must_close) not_closed += c->WaitClosed(5s) ? 0 : 1;
  int goaways = 0;  // an invalid preface may be answered by closing alone (RFC 9113, 3.4)
  for (RawConnection* c : bad_frames_sent) {
    auto types = c->FrameTypes();
    goaways += std::count(types.begin(), types.end(), 0x7) > 0 ? 1 : 0;
  }
  const int bad_frame_clients = static_cast<int>(bad_frames_sent.size());
  bad_frames_sent.clear();
  const size_t garbage_clients = must_close.size() + may_linger.size();
  must_close.clear();
  may_linger.clear();
  // Every connection of theirs is gone from the shim too: none leaks a descriptor.
  bool released = WaitUntil([&] { return OpenDescriptors(shim_pid_) <= fds_before; }, 5s, 50ms);
  const int fds_after = OpenDescriptors(shim_pid_);

  // More bursts without the garbage, until the RSS settles: an allocator grows towards a
  // high-water mark in ever rarer steps (glibc's here within a few bursts, ASan's after about
  // ten, some 20 MiB higher), whereas a leak grows with every call. Settled means less than
  // 1 MiB more over three bursts (6,000 burst calls and some 6,000 of the load): a leak of 100
  // bytes a call never gets there.
  constexpr int kMaxBursts = 25;
  constexpr size_t kWindow = 3;
  std::vector<long> rss_series = {rss_first};
  std::string bad;
  int wrong_later = 0;
  std::string took;
  bool settled = false;
  for (int i = 0; i < kMaxBursts && !settled; ++i) {
    auto result = burst.RunAll(calls, 60s);
    wrong_later += BadAnswers(result, &bad);
    took += (i == 0 ? "" : ", ") + std::to_string(result.took.count()) + " ms";
    std::this_thread::sleep_for(300ms);
    rss_series.push_back(RssKib(shim_pid_));
    settled = rss_series.size() > kWindow &&
              rss_series.back() - rss_series[rss_series.size() - 1 - kWindow] < 1024;
  }
  Tally load = load_->EndPhase();

  int wrong_first = BadAnswers(first, &bad);
  std::string rss = std::to_string(rss_before);
  for (long kib : rss_series) rss += " -> " + std::to_string(kib);
  Figures("flood: first burst " + Summary(first) + " with " + std::to_string(garbage_clients) +
          " garbage/silent clients; " + std::to_string(rss_series.size() - 1) +
          " later bursts with " + std::to_string(wrong_later) + " bad answers in " + took +
          "; RSS " + rss + " KiB; fds " + std::to_string(fds_before) + " -> " +
          std::to_string(fds_after) + "; " + std::to_string(goaways) + " of " +
          std::to_string(bad_frame_clients) +
          " connections with malformed frames got a GOAWAY; load " + load.Summary());
  EXPECT_EQ(wrong_first, 0) << Summary(first) << bad;
  EXPECT_EQ(wrong_later, 0) << bad;
  EXPECT_EQ(not_closed, 0) << "connections that sent garbage were left open";
  EXPECT_EQ(goaways, bad_frame_clients) << "malformed frames ended a connection without GOAWAY";
  EXPECT_TRUE(released) << "the shim holds " << fds_after << " descriptors, " << fds_before
                        << " before the garbage clients came and went";
  // Under ThreadSanitizer (make test-tsan sets TSAN_OPTIONS) every heap byte brings shadow
  // memory and TSan's allocator keeps freed blocks longer: the RSS must still settle, but its
  // size says nothing about the shim's own memory, so only its growth pattern is judged there.
  const char* tsan = getenv("TSAN_OPTIONS");
  const long kGrowthBoundKib = tsan != nullptr && *tsan != '\0' ? 256 * 1024 : 32 * 1024;
  EXPECT_LT(rss_first - rss_before, kGrowthBoundKib) << "KiB of growth over the first burst";
  EXPECT_TRUE(settled) << "the RSS keeps growing, burst after burst (KiB): " << rss;
  EXPECT_LT(rss_series.back() - rss_before, kGrowthBoundKib) << "KiB of growth in all";
  EXPECT_EQ(load.failed(), 0) << load.Summary();
  EXPECT_GT(load.total(), 100) << load.Summary();
  EXPECT_TRUE(ShimAlive());
}

// 6c. Floods of 2,000 concurrent calls over 20 connections, three in a row, then the clients go.
// Callers saw: every call answered. The shim's heap (RssAnon) grew by megabytes during the
// floods and, once they were over and quiet for a while, gave at least half of that back and came
// within 2 MiB of what it was before (about 0.7 MiB measured: the connection to the runtime keeps
// its grown tables): the allocator's free pages go back to the kernel instead of staying at the
// floods' size for good.
// Not under the sanitizers, whose allocators keep freed memory their own way.
TEST_F(FaultsE2E, MemoryOfAFloodIsGivenBackOnceItIsOver) {
  for (const char* sanitizer : {"ASAN_OPTIONS", "TSAN_OPTIONS"}) {
    const char* value = getenv(sanitizer);
    if (value != nullptr && *value != '\0') GTEST_SKIP() << "a sanitizer's allocator is in use";
  }
  StartShim({});
  constexpr int kConnections = 20;
  constexpr int kCalls = 2000;
  const auto calls = BurstCalls(kCalls);
  long before = 0, peak = 0;
  // What one connection keeps is not a flood's. The client lives to the end of the test: a
  // gRPC client destroyed right after its last answer, with another created at once, has been
  // seen to trip gRPC's own reference-count assertion in this test process.
  CriAsyncClient warm_up(shim_->Socket(), 1);
  ASSERT_TRUE(warm_up.Connect(10s));
  ASSERT_EQ(warm_up.RunAll(BurstCalls(20), 30s).Ok(), 20);
  std::this_thread::sleep_for(300ms);
  before = ProcStatusField(shim_pid_, "RssAnon");
  {
    CriAsyncClient flood(shim_->Socket(), kConnections);
    ASSERT_TRUE(flood.Connect(10s));
    for (int i = 0; i < 3; ++i) {
      auto result = flood.RunAll(calls, 60s);
      ASSERT_EQ(result.Ok(), kCalls) << Summary(result);
      peak = std::max(peak, ProcStatusField(shim_pid_, "RssAnon"));
    }
  }
  long now = 0;
  bool given_back = WaitUntil(
      [&] {
        now = ProcStatusField(shim_pid_, "RssAnon");
        return now <= before + std::min(2048L, (peak - before) / 2);
      },
      15s, 100ms);
  Figures("flood memory: RssAnon " + std::to_string(before) + " KiB before, " +
          std::to_string(peak) + " KiB at the floods' peak, " + std::to_string(now) +
          " KiB once quiet");
  EXPECT_GT(peak - before, 2048) << "the floods did not grow the heap: this test proves nothing";
  EXPECT_TRUE(given_back) << "the heap kept the floods' size: " << now << " KiB against " << before
                          << " KiB before";
  EXPECT_TRUE(ShimAlive());
}

// 6b. 1,200 connections that never send a byte, to a shim started with a soft RLIMIT_NOFILE of
// 1024 (hard 4096): the shim raises its soft limit to the hard one and accepts them all.
// Callers saw: the load OK while they were open, and a client connecting after them answered.
// Lost: nothing. With them open and no calls, the shim used under 0.5 s of CPU in 2 s: idle
// connections cost no busy loop. (They are held for about 4 s, within the 10 s the shim grants a
// connection to send its HTTP/2 preface.)
TEST_F(FaultsE2E, IdleConnectionsBeyondASoftLimitOf1024) {
  StartShim({.nofile = "1024:4096"});
  constexpr int kIdle = 1200;
  std::this_thread::sleep_for(200ms);  // StartShim's pull connection is closed by then
  const int fds_before = OpenDescriptors(shim_pid_);
  std::vector<std::unique_ptr<RawConnection>> idle;
  for (int i = 0; i < kIdle; ++i) {
    auto c = RawConnection::Open(shim_->Socket());
    if (!c) break;  // the backlog is full: the shim stopped accepting
    idle.push_back(std::move(c));
  }
  bool all_accepted =
      WaitUntil([&] { return AcceptedConnections(shim_->Socket()) >= kIdle; }, 10s, 50ms);
  const int fds_held = OpenDescriptors(shim_pid_);
  const int accepted = AcceptedConnections(shim_->Socket());

  StartLoad();
  std::this_thread::sleep_for(1500ms);
  Tally load = load_->EndPhase();
  load_.reset();
  CriClient late(shim_->Socket());
  grpc::Status late_version = late.Version("v1", nullptr, {.timeout = kCallDeadline});
  cri::ImageStatusResponse late_image;
  grpc::Status late_status = late.ImageStatus(kLoadImage, &late_image, {.timeout = kCallDeadline});

  std::this_thread::sleep_for(200ms);
  milliseconds cpu_start = CpuTime(shim_pid_);
  std::this_thread::sleep_for(2s);
  milliseconds idle_cpu = CpuTime(shim_pid_) - cpu_start;
  const size_t connected = idle.size();
  idle.clear();
  bool released =
      WaitUntil([&] { return OpenDescriptors(shim_pid_) <= fds_before + 2; }, 10s, 50ms);

  Figures("idle connections: " + std::to_string(connected) + " connected, " +
          std::to_string(accepted) + " accepted, shim fds " + std::to_string(fds_before) + " -> " +
          std::to_string(fds_held) + " -> " + std::to_string(OpenDescriptors(shim_pid_)) + " (" +
          OpenFilesLimit(shim_pid_) + "); late client " + Describe(late_version) + "; CPU " +
          std::to_string(idle_cpu.count()) + " ms in 2 s idle; load " + load.Summary());
  EXPECT_EQ(connected, static_cast<size_t>(kIdle)) << "connect failed: the backlog filled up";
  EXPECT_TRUE(all_accepted) << "the shim accepted " << accepted << " connections, not " << kIdle
                            << "; " << OpenFilesLimit(shim_pid_) << "\n"
                            << TailLines(shim_->Log());
  EXPECT_TRUE(late_version.ok()) << Describe(late_version);
  EXPECT_TRUE(late_status.ok() && late_image.has_image()) << Describe(late_status);
  EXPECT_EQ(load.failed(), 0) << load.Summary();
  EXPECT_LT(idle_cpu, 500ms) << "the shim is busy with idle connections";
  EXPECT_TRUE(released) << "closed connections still hold descriptors in the shim: "
                        << OpenDescriptors(shim_pid_) << ", " << fds_before << " before";
  EXPECT_TRUE(ShimAlive());
}

// 6c. The shim runs out of descriptors (hard RLIMIT_NOFILE 256) as 400 clients connect and say
// nothing.
// Callers saw: clients connected before kept getting answers, and once the idle connections were
// gone a new client was answered again. Lost: nothing. The shim paused accepting (and said so)
// instead of spinning on EMFILE: under 0.5 s of CPU in 2 s.
TEST_F(FaultsE2E, OutOfDescriptorsPausesAcceptingWithoutSpinning) {
  StartShim({.nofile = "256:256"});
  StartLoad();
  std::this_thread::sleep_for(500ms);
  Tally before = load_->EndPhase();
  std::vector<std::unique_ptr<RawConnection>> idle;
  for (int i = 0; i < 400; ++i) {
    if (auto c = RawConnection::Open(shim_->Socket())) idle.push_back(std::move(c));
  }
  // Out of descriptors: the shim holds as many as its hard limit allows.
  bool exhausted = WaitUntil([&] { return OpenDescriptors(shim_pid_) >= 250; }, 10s, 50ms);
  const int fds_held = OpenDescriptors(shim_pid_);
  std::this_thread::sleep_for(1500ms);
  Tally during = load_->EndPhase();
  load_.reset();

  milliseconds cpu_start = CpuTime(shim_pid_);
  std::this_thread::sleep_for(2s);
  milliseconds idle_cpu = CpuTime(shim_pid_) - cpu_start;
  int shortage_lines = LogCount("cannot accept");

  idle.clear();
  CriClient late(shim_->Socket());
  grpc::Status late_version;
  bool served = WaitUntil(
      [&] {
        late_version = late.Version("v1", nullptr, {.timeout = 2s});
        return late_version.ok();
      },
      15s, 100ms);

  Figures("out of descriptors: " + std::to_string(fds_held) + " fds held (" +
          OpenFilesLimit(shim_pid_) + "); load before " + before.Summary() + ", while full " +
          during.Summary() + "; CPU " + std::to_string(idle_cpu.count()) + " ms in 2 s; " +
          std::to_string(shortage_lines) + " log lines on it; late client " +
          Describe(late_version));
  EXPECT_TRUE(exhausted) << "the shim never ran out of descriptors (" << fds_held
                         << " held): the test proves nothing\n"
                         << TailLines(shim_->Log());
  EXPECT_GE(shortage_lines, 1) << "the shortage was not logged\n" << TailLines(shim_->Log());
  EXPECT_EQ(before.failed(), 0) << before.Summary();
  EXPECT_EQ(during.failed(), 0) << during.Summary();
  EXPECT_GT(during.total(), 50) << during.Summary();
  EXPECT_LT(idle_cpu, 500ms) << "the shim spins while it cannot accept";
  EXPECT_TRUE(served) << Describe(late_version) << "\n" << TailLines(shim_->Log());
  EXPECT_TRUE(ShimAlive());
}

}  // namespace
}  // namespace shim::testing
