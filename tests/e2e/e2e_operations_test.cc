// End-to-end tests of the shim as operators run it: the systemd notify protocol, the metrics and
// health endpoint, and its logs. The built daemon runs between a CRI client and a real containerd,
// with a real TLS registry that wants credentials, inside tests/e2e/sandbox.sh (ctest
// e2e_operations). Every test starts its own shim, with the metrics endpoint on a free loopback
// port, and stops it; TearDown checks every line of its log for the log format and for secrets.
//
// What the tests look at is what systemd, Prometheus and an operator would see: datagrams on
// $NOTIFY_SOCKET, HTTP answers, the text format line by line, the listening sockets the process
// holds (/proc), and the log.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "containerd.h"
#include "cri_client.h"
#include "registry.h"
#include "shim_process.h"
#include "subprocess.h"
#include "temp_dir.h"
#include "test_image.h"
#include "test_secrets.h"
#include "test_util.h"

namespace shim::testing {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

constexpr char kUser[] = "ops-user";
constexpr char kPassword[] = "ops-pw-Q4z8v1";
constexpr char kKubeletUser[] = "ops-kubelet";
constexpr char kKubeletPassword[] = "ops-kubelet-pw-7Hn2";

const CallOptions kQuick{.timeout = 20s};
const CallOptions kPull{.timeout = 120s};

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// ---- systemd's side of the notify protocol --------------------------------------------------

// A unix datagram socket bound where $NOTIFY_SOCKET points, as systemd holds for a Type=notify
// service. Each datagram is one notification ("READY=1", possibly several lines).
class NotifySocket {
 public:
  explicit NotifySocket(std::string path) : path_(std::move(path)) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error("socket(AF_UNIX, SOCK_DGRAM) failed");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path_.size() >= sizeof addr.sun_path) throw std::runtime_error("path too long: " + path_);
    std::copy(path_.begin(), path_.end(), addr.sun_path);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw std::runtime_error("bind " + path_ + ": " + std::strerror(errno));
    }
  }
  ~NotifySocket() {
    close(fd_);
    unlink(path_.c_str());
  }
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;

  const std::string& path() const { return path_; }

  // The next datagram, or nullopt when none arrives within `timeout`.
  std::optional<std::string> Next(milliseconds timeout) {
    pollfd p{.fd = fd_, .events = POLLIN, .revents = 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
    char buffer[4096];
    ssize_t n = recv(fd_, buffer, sizeof buffer, 0);
    if (n < 0) return std::nullopt;
    return std::string(buffer, static_cast<size_t>(n));
  }

  // Waits for a datagram holding the line `want`; everything received on the way is appended to
  // `seen`. The callback runs the moment it arrives (before anything else is observed).
  bool WaitFor(const std::string& want, milliseconds timeout, std::vector<std::string>* seen,
               const std::function<void()>& on_arrival = {}) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto left =
          std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      auto message = Next(std::max(left, 1ms));
      if (!message) continue;
      bool match = false;
      for (const auto& line : Lines(*message)) match = match || line == want;
      if (match && on_arrival) on_arrival();
      seen->push_back(*message);
      if (match) return true;
    }
    return false;
  }

 private:
  std::string path_;
  int fd_ = -1;
};

// ---- HTTP and sockets -------------------------------------------------------------------------

// The TCP ports that process `pid` listens on (its socket fds matched against /proc/net/tcp{,6}
// entries in state LISTEN).
std::set<int> ListeningTcpPorts(pid_t pid) {
  std::set<std::string> inodes;
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::error_code ignored;
    std::string target = std::filesystem::read_symlink(entry.path(), ignored).string();
    if (target.starts_with("socket:[")) inodes.insert(target.substr(8, target.size() - 9));
  }
  std::set<int> ports;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmit, uid, timeout, inode;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retransmit >> uid >>
          timeout >> inode;
      if (state == "0A" && inodes.count(inode) != 0) {
        ports.insert(std::stoi(local.substr(local.rfind(':') + 1), nullptr, 16));
      }
    }
  }
  return ports;
}

// A TCP listener on 127.0.0.1:port held by the test (plain SO_REUSEADDR, no SO_REUSEPORT).
class PortHolder {
 public:
  PortHolder() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd_, 4) != 0) {
      throw std::runtime_error(std::string("cannot hold a port: ") + std::strerror(errno));
    }
    socklen_t len = sizeof addr;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~PortHolder() { close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// ---- Prometheus text format -------------------------------------------------------------------

struct Sample {
  std::string name;
  std::vector<std::pair<std::string, std::string>> labels;  // in order of appearance
  double value = 0;
};

struct Exposition {
  std::vector<Sample> samples;
  std::map<std::string, std::string> types;  // family -> counter, gauge, histogram, ...
  std::vector<std::string> errors;           // "line N: what is wrong: the line"

  // The value of the series with exactly these labels (any order), or nullopt.
  std::optional<double> Value(const std::string& name,
                              std::map<std::string, std::string> labels = {}) const {
    for (const auto& s : samples) {
      if (s.name != name || s.labels.size() != labels.size()) continue;
      bool same = true;
      for (const auto& [k, v] : s.labels) same = same && labels.count(k) != 0 && labels[k] == v;
      if (same) return s.value;
    }
    return std::nullopt;
  }
};

bool IsMetricName(const std::string& s) {
  static const std::regex re("[a-zA-Z_:][a-zA-Z0-9_:]*");
  return std::regex_match(s, re);
}

bool ParseValue(const std::string& text, double* value) {
  if (text == "+Inf") return *value = INFINITY, true;
  if (text == "-Inf") return *value = -INFINITY, true;
  if (text == "NaN") return *value = NAN, true;
  static const std::regex re(R"([-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)");
  if (!std::regex_match(text, re)) return false;
  *value = std::strtod(text.c_str(), nullptr);
  return true;
}

// A strict reader of the Prometheus text exposition format 0.0.4: every line is a HELP, a TYPE
// or a sample; names and label names are valid, label values are quoted with only \\, \" and \n
// escapes, values are floats; each family is TYPEd once, before its samples; no series twice;
// histograms are cumulative with +Inf equal to _count.
Exposition ParseExposition(const std::string& text) {
  Exposition out;
  std::set<std::string> seen_series, helped;
  if (!text.empty() && text.back() != '\n') out.errors.push_back("no newline at the end");
  auto lines = Lines(text);
  for (size_t n = 0; n < lines.size(); ++n) {
    const std::string& line = lines[n];
    auto error = [&](const std::string& what) {
      out.errors.push_back("line " + std::to_string(n + 1) + ": " + what + ": " + line);
    };
    if (line.starts_with("# HELP ") || line.starts_with("# TYPE ")) {
      std::istringstream in(line.substr(7));
      std::string name, rest;
      in >> name;
      std::getline(in, rest);
      if (!IsMetricName(name)) error("bad metric name");
      if (line[2] == 'H') {
        if (!helped.insert(name).second) error("second HELP");
        if (rest.size() < 2) error("empty HELP");
      } else {
        static const std::set<std::string> kTypes = {" counter", " gauge", " histogram", " summary",
                                                     " untyped"};
        if (kTypes.count(rest) == 0) error("bad TYPE");
        if (out.types.count(name) != 0) error("second TYPE");
        out.types[name] = rest.substr(1);
      }
      continue;
    }
    if (line.empty() || line[0] == '#') {
      error("neither HELP, TYPE nor a sample");
      continue;
    }
    Sample sample;
    size_t at = 0;
    while (at < line.size() && line[at] != '{' && line[at] != ' ') ++at;
    sample.name = line.substr(0, at);
    if (!IsMetricName(sample.name)) error("bad metric name");
    if (at < line.size() && line[at] == '{') {
      ++at;
      while (at < line.size() && line[at] != '}') {
        size_t eq = line.find('=', at);
        if (eq == std::string::npos) break;
        std::string label = line.substr(at, eq - at);
        static const std::regex label_re("[a-zA-Z_][a-zA-Z0-9_]*");
        if (!std::regex_match(label, label_re) || label.starts_with("__")) error("bad label name");
        at = eq + 1;
        if (at >= line.size() || line[at] != '"') {
          error("label value not quoted");
          break;
        }
        std::string value;
        bool closed = false;
        for (++at; at < line.size(); ++at) {
          char c = line[at];
          if (c == '\\') {
            char next = at + 1 < line.size() ? line[at + 1] : '\0';
            if (next != '\\' && next != '"' && next != 'n') error("bad escape in label value");
            value += next == 'n' ? '\n' : next;
            ++at;
          } else if (c == '"') {
            closed = true;
            ++at;
            break;
          } else {
            value += c;
          }
        }
        if (!closed) error("unterminated label value");
        sample.labels.emplace_back(label, value);
        if (at < line.size() && line[at] == ',') {
          ++at;
          if (at < line.size() && line[at] == '}') error("trailing comma in labels");
        } else if (at >= line.size() || line[at] != '}') {
          error("labels not separated by ','");
          break;
        }
      }
      if (at >= line.size() || line[at] != '}') {
        error("labels not closed");
        continue;
      }
      ++at;
    }
    if (at >= line.size() || line[at] != ' ') {
      error("no space before the value");
      continue;
    }
    std::istringstream rest(line.substr(at + 1));
    std::string value_text, timestamp, extra;
    rest >> value_text >> timestamp >> extra;
    if (line.substr(at + 1).starts_with(" ") || !extra.empty()) error("stray spaces or fields");
    if (!ParseValue(value_text, &sample.value)) error("value is not a float");
    static const std::regex ts_re("-?\\d+");
    if (!timestamp.empty() && !std::regex_match(timestamp, ts_re)) error("bad timestamp");
    // The family: a histogram's series end in _bucket, _sum, _count.
    std::string family = sample.name;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      std::string base = sample.name.size() > std::strlen(suffix) && sample.name.ends_with(suffix)
                             ? sample.name.substr(0, sample.name.size() - std::strlen(suffix))
                             : "";
      if (!base.empty() && out.types.count(base) != 0 &&
          (out.types[base] == "histogram" || out.types[base] == "summary")) {
        family = base;
      }
    }
    if (out.types.count(family) == 0) error("sample before (or without) its TYPE");
    std::string series = sample.name + "{";
    for (const auto& [k, v] : sample.labels) series += k + "=" + v + ",";
    if (!seen_series.insert(series).second) error("the same series twice");
    out.samples.push_back(std::move(sample));
  }
  // Histograms: buckets cumulative, +Inf == _count, per label set without `le`.
  for (const auto& [family, type] : out.types) {
    if (type != "histogram") continue;
    std::map<std::string, std::vector<std::pair<double, double>>> buckets;  // labels -> (le, n)
    for (const auto& s : out.samples) {
      if (s.name != family + "_bucket") continue;
      std::string key;
      double le = NAN;
      for (const auto& [k, v] : s.labels) {
        if (k == "le") {
          if (!ParseValue(v, &le)) out.errors.push_back(family + ": bad le \"" + v + "\"");
        } else {
          key += k + "=" + v + ",";
        }
      }
      buckets[key].emplace_back(le, s.value);
    }
    for (auto& [key, list] : buckets) {
      for (size_t i = 1; i < list.size(); ++i) {
        if (!(list[i].first > list[i - 1].first) || list[i].second < list[i - 1].second) {
          out.errors.push_back(family + "{" + key + "}: buckets not increasing and cumulative");
        }
      }
      if (list.empty() || !std::isinf(list.back().first)) {
        out.errors.push_back(family + "{" + key + "}: no +Inf bucket last");
        continue;
      }
      std::optional<double> count;
      for (const auto& s : out.samples) {
        if (s.name != family + "_count") continue;
        std::string k2;
        for (const auto& [k, v] : s.labels) k2 += k + "=" + v + ",";
        if (k2 == key) count = s.value;
      }
      if (count != list.back().second) {
        out.errors.push_back(family + "{" + key + "}: +Inf bucket differs from _count");
      }
    }
  }
  return out;
}

// ---- The log format ---------------------------------------------------------------------------

// One line: "<UTC timestamp, ms> <level> <message> [key=value ...]". Returns what is wrong, or "".
// The message is free text; every key=value token after it is well formed: a key of letters,
// digits, '_', '.' or '-', and a value that is a non-empty run without spaces or a quoted
// string with its quotes closed.
std::string LogLineProblem(const std::string& line) {
  static const std::regex head(
      R"(^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{3})Z (debug|info|warn|error|fatal) (.*)$)");
  std::smatch m;
  if (!std::regex_match(line, m, head)) return "not \"<timestamp> <level> <message>\"";
  std::string rest = m[9];
  if (rest.empty() || rest[0] == ' ') return "empty message";
  if (rest.back() == ' ') return "trailing space";
  for (char c : rest) {
    if (static_cast<unsigned char>(c) < 0x20) return "control character";
  }
  static const std::regex key_re(R"(^[A-Za-z_][A-Za-z0-9_.\-]*$)");
  size_t at = 0;
  while (at < rest.size()) {
    size_t end = rest.find(' ', at);
    std::string token = rest.substr(at, end == std::string::npos ? std::string::npos : end - at);
    size_t eq = token.find('=');
    if (eq != std::string::npos && eq > 0 && std::regex_match(token.substr(0, eq), key_re)) {
      size_t value_at = at + eq + 1;
      if (value_at >= rest.size() || rest[value_at] == ' ') {
        return "empty value for " + token.substr(0, eq);
      }
      if (rest[value_at] == '"') {
        size_t close = value_at + 1;
        while (close < rest.size() && rest[close] != '"') close += rest[close] == '\\' ? 2 : 1;
        if (close >= rest.size()) return "unterminated quoted value for " + token.substr(0, eq);
        end = close + 1 < rest.size() ? close + 1 : std::string::npos;
        if (end != std::string::npos && rest[end] != ' ' && rest[end] != ';' && rest[end] != ',') {
          return "text glued to the quoted value of " + token.substr(0, eq);
        }
      }
    }
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return "";
}

// ---- The fixture ------------------------------------------------------------------------------

std::string ConfigYaml(const std::string& socket, const std::string& cri,
                       const std::string& registry, const std::string& metrics_address,
                       bool debug = false) {
  return "shim: " + socket + "\ncri: " + cri + "\naddress: " + registry + "\nauth: \"" + kUser +
         ":" + kPassword + "\"\ndebug: " + (debug ? "true" : "false") +
         "\ntimeout: 5m\nreloadInterval: 1h\nconfigMap:\n  enabled: false\nmetricsAddress: \"" +
         metrics_address + "\"\n";
}

class OperationsE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // systemd's variable must reach the shim only where a test puts it.
    unsetenv("NOTIFY_SOCKET");
    try {
      registry_ =
          new Registry({.host_name = "registry-a.test", .username = kUser, .password = kPassword});
      PushImage(*registry_, "library/nginx:latest");
      containerd_ = new Containerd();
    } catch (const std::exception& e) {
      setup_error_ = e.what();
    }
  }
  static void TearDownTestSuite() {
    delete containerd_;
    delete registry_;
    containerd_ = nullptr;
    registry_ = nullptr;
  }

  void SetUp() override {
    if (!setup_error_.empty()) GTEST_FAIL() << "suite setup failed: " << setup_error_;
    if (!containerd_->Running()) containerd_->Start();
    dir_ = std::make_unique<TempDir>("shim-ops");
  }

  void TearDown() override {
    for (auto& shim : shims_) {
      shim->Stop();
      CheckLog(shim->Log());
    }
    shims_.clear();
  }

  // Every line in the format, no secret anywhere.
  static void CheckLog(const std::string& log) {
    int bad = 0;
    for (const auto& line : Lines(log)) {
      std::string problem = LogLineProblem(line);
      if (!problem.empty() && ++bad <= 10)
        ADD_FAILURE() << "log line: " << problem << ":\n" << line;
    }
    for (const auto& secret : AllTestSecrets()) {
      EXPECT_FALSE(Contains(log, secret))
          << "a secret (" << secret.substr(0, 3) << "...) is in the shim's log";
    }
  }

  struct ShimSetup {
    std::string metrics_address = "127.0.0.1:" + std::to_string(FreeLoopbackPort());
    bool debug_flag = false;    // --debug
    bool debug_config = false;  // `debug: true` in the file
    std::map<std::string, std::string> env = {};
  };

  // A shim of this test's own (not started); config_path_ and socket_ describe it.
  ShimProcess& NewShim(const ShimSetup& setup) {
    std::string sub = dir_->MakeDir("s" + std::to_string(shims_.size()));
    socket_ = sub + "/shim.sock";
    config_path_ = sub + "/shim.yaml";
    metrics_address_ = setup.metrics_address;
    WriteFile(config_path_,
              ConfigYaml(socket_, containerd_->Socket(), registry_->Address(),
                         setup.metrics_address, setup.debug_config),
              0600);
    shims_.push_back(std::make_unique<ShimProcess>(ShimOptions{.config_path = config_path_,
                                                               .socket_path = socket_,
                                                               .debug = setup.debug_flag,
                                                               .env = setup.env}));
    return *shims_.back();
  }

  int MetricsPort() const {
    return std::stoi(metrics_address_.substr(metrics_address_.rfind(':') + 1));
  }

  Exposition Scrape() {
    HttpAnswer answer = HttpGet(MetricsPort(), "/metrics");
    EXPECT_EQ(answer.status, 200) << answer.error;
    Exposition exposition = ParseExposition(answer.body);
    for (const auto& e : exposition.errors) ADD_FAILURE() << "/metrics: " << e;
    return exposition;
  }

  // Polls /metrics until `name{labels}` has at least `want`.
  bool WaitForMetric(const std::string& name, std::map<std::string, std::string> labels,
                     double want, milliseconds timeout = 15s) {
    return WaitUntil(
        [&] {
          auto answer = HttpGet(MetricsPort(), "/metrics");
          auto value = ParseExposition(answer.body).Value(name, labels);
          return value && *value >= want;
        },
        timeout, 100ms);
  }

  static Registry* registry_;
  static Containerd* containerd_;
  static std::string setup_error_;

  std::unique_ptr<TempDir> dir_;
  std::vector<std::unique_ptr<ShimProcess>> shims_;
  std::string socket_;
  std::string config_path_;
  std::string metrics_address_;
};

Registry* OperationsE2E::registry_ = nullptr;
Containerd* OperationsE2E::containerd_ = nullptr;
std::string OperationsE2E::setup_error_;

// ---- The checkers themselves must be able to fail ----------------------------------------------

TEST(OperationsCheckers, PrometheusParserRejectsMalformedText) {
  EXPECT_TRUE(ParseExposition("# TYPE a counter\na{x=\"1\"} 2\n").errors.empty());
  for (const char* bad : {
           "a 1\n",                                           // no TYPE
           "# TYPE a counter\na{x=1} 2\n",                    // unquoted value
           "# TYPE a counter\na{x=\"1\",} 2\n",               // trailing comma
           "# TYPE a counter\na{x=\"1\"} two\n",              // not a float
           "# TYPE a counter\na{x=\"1\"} 2\na{x=\"1\"} 3\n",  // the same series twice
           "# TYPE a counter\na{x=\"a\\qb\"} 2\n",            // bad escape
           "# TYPE a counter\n\na 1\n",                       // empty line
           "# TYPE a counter\na 1",                           // no final newline
           "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
           "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",
       }) {
    EXPECT_FALSE(ParseExposition(bad).errors.empty()) << "accepted:\n" << bad;
  }
}

TEST(OperationsCheckers, LogLineCheckerRejectsMalformedLines) {
  EXPECT_EQ(LogLineProblem("2024-05-01T12:00:00.123Z info pull done image=nginx:latest "
                           "registry=r.example.com error=\"a b\""),
            "");
  for (const char* bad : {
           "2024-05-01 12:00:00 info message",                           // not the timestamp format
           "2024-05-01T12:00:00.123Z warning message",                   // not a level name
           "2024-05-01T12:00:00.123Z info ",                             // no message
           "2024-05-01T12:00:00.123Z info message error=\"open",         // unterminated quote
           "2024-05-01T12:00:00.123Z info message key= other=1",         // empty value
           "[2024-05-01 12:00:00.123] [image-cri-shim] [info] message",  // spdlog's default
       }) {
    EXPECT_NE(LogLineProblem(bad), "") << "accepted: " << bad;
  }
}

// ---- systemd ----------------------------------------------------------------------------------

// READY=1 arrives once the socket accepts connections; SIGHUP brings RELOADING=1 then READY=1;
// SIGTERM brings STOPPING=1 and a clean exit.
TEST_F(OperationsE2E, NotifiesSystemdReadyReloadingAndStopping) {
  NotifySocket notify(dir_->File("notify.sock"));
  ShimProcess& shim = NewShim({.env = {{"NOTIFY_SOCKET", notify.path()}}});
  shim.Launch();
  std::vector<std::string> seen;
  bool accepted_at_ready = false;
  ASSERT_TRUE(notify.WaitFor("READY=1", 20s, &seen,
                             [&] { accepted_at_ready = UnixSocketAccepts(socket_); }))
      << "no READY=1; got " << seen.size() << " datagrams\n"
      << TailLines(shim.Log());
  EXPECT_TRUE(accepted_at_ready) << "READY=1 came before " << socket_ << " accepted connections";
  // Calls work at once.
  CriClient client(socket_);
  cri::VersionResponse version;
  EXPECT_TRUE(client.Version("v1", &version, kQuick).ok());

  // RELOADING=1 first (nothing says READY=1 before it), then READY=1 once the reload is done.
  seen.clear();
  ASSERT_TRUE(shim.Signal(SIGHUP));
  ASSERT_TRUE(notify.WaitFor("RELOADING=1", 10s, &seen)) << TailLines(shim.Log());
  for (const auto& message : seen) {
    EXPECT_FALSE(Contains(message, "READY=1")) << "READY=1 before RELOADING=1: " << message;
  }
  ASSERT_TRUE(notify.WaitFor("READY=1", 10s, &seen)) << "no READY=1 after the reload\n"
                                                     << TailLines(shim.Log());
  EXPECT_TRUE(client.Version("v1", &version, kQuick).ok());

  seen.clear();
  ASSERT_TRUE(shim.Signal(SIGTERM));
  ASSERT_TRUE(notify.WaitFor("STOPPING=1", 10s, &seen)) << TailLines(shim.Log());
  auto exit = shim.WaitExit(15s);
  ASSERT_TRUE(exit.has_value()) << "still running after SIGTERM";
  EXPECT_TRUE(exit->Success()) << exit->ToString();
  for (auto message = notify.Next(200ms); message; message = notify.Next(200ms)) {
    EXPECT_FALSE(Contains(*message, "READY=1")) << "READY=1 after STOPPING=1";
  }
}

// A shim that cannot serve (another instance holds the socket) never says READY=1.
TEST_F(OperationsE2E, NoReadyWhenTheSocketCannotBeServed) {
  ShimProcess& first = NewShim({});
  first.Start();
  NotifySocket notify(dir_->File("notify.sock"));
  ShimProcess second(ShimOptions{.config_path = config_path_,
                                 .socket_path = socket_,
                                 .env = {{"NOTIFY_SOCKET", notify.path()}},
                                 .log_path = config_path_ + ".second.log"});
  second.Launch();
  auto exit = second.WaitExit(15s);
  ASSERT_TRUE(exit.has_value()) << "a second instance kept running:\n" << TailLines(second.Log());
  EXPECT_FALSE(exit->Success());
  std::vector<std::string> seen;
  EXPECT_FALSE(notify.WaitFor("READY=1", 500ms, &seen)) << "READY=1 from a shim that exited";
  CheckLog(second.Log());
}

// Outside systemd (no NOTIFY_SOCKET) and with a NOTIFY_SOCKET nobody listens on, the shim starts,
// serves, reloads and stops as usual.
TEST_F(OperationsE2E, WorksWithoutOrWithADeadNotifySocket) {
  for (const auto& env : std::vector<std::map<std::string, std::string>>{
           {}, {{"NOTIFY_SOCKET", dir_->File("nobody-listens.sock")}}}) {
    SCOPED_TRACE(env.empty() ? "no NOTIFY_SOCKET" : "dead NOTIFY_SOCKET");
    ShimProcess& shim = NewShim({.env = env});
    ASSERT_NO_THROW(shim.Start());
    CriClient client(socket_);
    cri::VersionResponse version;
    EXPECT_TRUE(client.Version("v1", &version, kQuick).ok());
    ASSERT_TRUE(shim.Signal(SIGHUP));
    EXPECT_TRUE(WaitForMetric("image_cri_shim_config_reloads_total",
                              {{"source", "signal"}, {"result", "ok"}}, 1))
        << TailLines(shim.Log());
    EXPECT_TRUE(client.Version("v1", &version, kQuick).ok());
    EXPECT_TRUE(shim.Stop().Success()) << TailLines(shim.Log());
  }
}

// ---- Health -----------------------------------------------------------------------------------

// /healthz: the process serves. /readyz: 200 while containerd answers, 503 while it is stopped,
// 200 again once it is back; runtime_reachable follows.
TEST_F(OperationsE2E, HealthAndReadinessFollowTheRuntime) {
  ShimProcess& shim = NewShim({});
  shim.Start();
  EXPECT_EQ(ListeningTcpPorts(shim.pid()), std::set<int>{MetricsPort()});
  HttpAnswer health = HttpGet(MetricsPort(), "/healthz");
  EXPECT_EQ(health.status, 200) << health.error;
  HttpAnswer ready = HttpGet(MetricsPort(), "/readyz");
  EXPECT_EQ(ready.status, 200) << ready.error << ready.body;
  EXPECT_EQ(HttpGet(MetricsPort(), "/nothing-here").status, 404);

  containerd_->Stop();
  EXPECT_TRUE(
      WaitUntil([&] { return HttpGet(MetricsPort(), "/readyz").status == 503; }, 15s, 200ms))
      << "/readyz did not turn 503 with containerd stopped";
  EXPECT_EQ(HttpGet(MetricsPort(), "/healthz").status, 200) << "the process still serves";
  EXPECT_TRUE(WaitUntil([&] { return Scrape().Value("image_cri_shim_runtime_reachable") == 0.0; },
                        15s, 500ms))
      << "runtime_reachable stayed 1";

  containerd_->Start();
  EXPECT_TRUE(
      WaitUntil([&] { return HttpGet(MetricsPort(), "/readyz").status == 200; }, 30s, 200ms))
      << "/readyz did not come back with containerd";
  EXPECT_TRUE(WaitUntil([&] { return Scrape().Value("image_cri_shim_runtime_reachable") == 1.0; },
                        15s, 500ms))
      << "runtime_reachable stayed 0";
  EXPECT_TRUE(UnixSocketAccepts(socket_));
}

// ---- Metrics ----------------------------------------------------------------------------------

// After a pull and a status call: calls by method and code, the latency histogram, pulls by
// registry and result, registry_up, build_info, runtime_reachable; after SIGHUP the reload
// counter. Every line is valid text format; no label value carries an image name or a secret.
TEST_F(OperationsE2E, MetricsCountCallsPullsAndReloads) {
  ShimProcess& shim = NewShim({});
  shim.Start();
  CriClient client(socket_);
  const cri::AuthConfig kubelet_auth = MakeAuth(kKubeletUser, kKubeletPassword);
  grpc::Status pull = client.PullImage("nginx:latest", &kubelet_auth, nullptr, kPull);
  ASSERT_TRUE(pull.ok()) << Describe(pull) << "\n" << TailLines(shim.Log());
  cri::ImageStatusResponse status;
  ASSERT_TRUE(client.ImageStatus("nginx:latest", &status, kQuick).ok());
  EXPECT_TRUE(status.has_image());
  cri::VersionResponse version;
  ASSERT_TRUE(client.Version("v1", &version, kQuick).ok());
  ASSERT_TRUE(shim.Signal(SIGHUP));
  ASSERT_TRUE(WaitForMetric("image_cri_shim_config_reloads_total",
                            {{"source", "signal"}, {"result", "ok"}}, 1))
      << TailLines(shim.Log());

  HttpAnswer answer = HttpGet(MetricsPort(), "/metrics");
  ASSERT_EQ(answer.status, 200) << answer.error;
  Exposition m = ParseExposition(answer.body);
  for (const auto& e : m.errors) ADD_FAILURE() << "/metrics: " << e;
  const std::string registry = registry_->Address();
  auto calls = [&](const std::string& method) {
    return m.Value("image_cri_shim_calls_total",
                   {{"version", "v1"}, {"method", method}, {"code", "OK"}});
  };
  EXPECT_EQ(calls("ImageService/PullImage"), 1.0) << answer.body;
  EXPECT_EQ(calls("ImageService/ImageStatus"), 1.0);
  EXPECT_GE(calls("RuntimeService/Version").value_or(0), 1.0);
  EXPECT_EQ(m.types["image_cri_shim_calls_total"], "counter");
  EXPECT_EQ(m.types["image_cri_shim_image_call_duration_seconds"], "histogram");
  EXPECT_EQ(m.Value("image_cri_shim_image_call_duration_seconds_count",
                    {{"method", "ImageService/PullImage"}}),
            1.0);
  EXPECT_EQ(m.Value("image_cri_shim_image_call_duration_seconds_bucket",
                    {{"method", "ImageService/PullImage"}, {"le", "+Inf"}}),
            1.0);
  EXPECT_GT(m.Value("image_cri_shim_image_call_duration_seconds_sum",
                    {{"method", "ImageService/PullImage"}})
                .value_or(0),
            0.0);
  EXPECT_EQ(m.Value("image_cri_shim_image_call_duration_seconds_count",
                    {{"method", "ImageService/ImageStatus"}}),
            1.0);
  EXPECT_EQ(m.Value("image_cri_shim_pulls_total", {{"registry", registry}, {"result", "ok"}}), 1.0)
      << answer.body;
  EXPECT_EQ(m.Value("image_cri_shim_registry_up", {{"registry", registry}}), 1.0);
  EXPECT_EQ(m.Value("image_cri_shim_runtime_reachable"), 1.0);
  EXPECT_EQ(m.Value("image_cri_shim_failovers_total"), 0.0);
  EXPECT_EQ(
      m.Value("image_cri_shim_config_reloads_total", {{"source", "signal"}, {"result", "ok"}}),
      1.0);
  EXPECT_EQ(
      m.Value("image_cri_shim_config_reloads_total", {{"source", "signal"}, {"result", "failed"}}),
      0.0);
  EXPECT_EQ(m.Value("image_cri_shim_configmap_sync_state", {{"state", "disabled"}}), 1.0)
      << answer.body;
  // build_info carries what --version says.
  std::string version_line = RunOrThrow({ShimBinaryPath(), "--version"});
  bool build_info = false;
  for (const auto& s : m.samples) {
    if (s.name != "image_cri_shim_build_info") continue;
    build_info = true;
    EXPECT_EQ(s.value, 1.0);
    for (const auto& [k, v] : s.labels) {
      EXPECT_TRUE(Contains(version_line, v)) << k << "=\"" << v << "\" not in " << version_line;
    }
  }
  EXPECT_TRUE(build_info) << "no image_cri_shim_build_info";

  // Label values: no image names (unbounded), no credentials, no user names.
  std::vector<std::string> forbidden = AllTestSecrets();
  for (const char* s : {"nginx", "library/", kUser, kKubeletUser}) forbidden.emplace_back(s);
  for (const auto& s : m.samples) {
    for (const auto& [k, v] : s.labels) {
      for (const auto& f : forbidden) {
        EXPECT_FALSE(Contains(v, f))
            << s.name << " label " << k << "=\"" << v << "\" holds \"" << f.substr(0, 3) << "...\"";
      }
    }
  }
  EXPECT_FALSE(Contains(answer.body, kPassword));
}

// metricsAddress "": no TCP listener at all.
TEST_F(OperationsE2E, MetricsAddressEmptyListensNowhere) {
  ShimProcess& shim = NewShim({.metrics_address = ""});
  shim.Start();
  CriClient client(socket_);
  cri::VersionResponse version;
  EXPECT_TRUE(client.Version("v1", &version, kQuick).ok());
  EXPECT_EQ(ListeningTcpPorts(shim.pid()), std::set<int>{});
  EXPECT_FALSE(Contains(shim.Log(), "metrics and health endpoint"));
}

// A port already taken: CRI is still served, and an error names the address.
TEST_F(OperationsE2E, MetricsPortInUseStillServesCriAndLogsTheAddress) {
  PortHolder holder;
  std::string address = "127.0.0.1:" + std::to_string(holder.port());
  ShimProcess& shim = NewShim({.metrics_address = address});
  shim.Start();
  CriClient client(socket_);
  cri::VersionResponse version;
  grpc::Status status = client.Version("v1", &version, kQuick);
  EXPECT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(ListeningTcpPorts(shim.pid()), std::set<int>{});
  bool named = false;
  for (const auto& line : Lines(shim.Log())) {
    named = named || (Contains(line, " error ") && Contains(line, address));
  }
  EXPECT_TRUE(named) << "no error line naming " << address << ":\n" << TailLines(shim.Log());
  EXPECT_TRUE(shim.Running());
}

// ---- Memory -----------------------------------------------------------------------------------

// Two seconds after the start the shim unmaps the code and read-only data only start-up touched
// (src/daemon/startup_pages.h): its file-backed resident memory drops by megabytes, the log says
// how much, and everything works as before, a pull over TLS and status calls included (the
// pages they need come back from the page cache).
TEST_F(OperationsE2E, PagesOnlyStartUpTouchedAreReleased) {
  ShimProcess& shim = NewShim({});
  shim.Start();
  CriClient client(socket_);
  cri::VersionResponse version;
  ASSERT_TRUE(client.Version("v1", &version, kQuick).ok());
  const long before = ProcStatusField(shim.pid(), "RssFile");
  std::smatch match;
  const std::regex released_line("start-up pages released mappings=(\\d+) resident_kib=(\\d+)");
  std::string log;
  ASSERT_TRUE(WaitUntil(
      [&] {
        log = shim.Log();
        return std::regex_search(log, match, released_line);
      },
      10s, 100ms))
      << "no release logged:\n"
      << TailLines(log);
  const long after = ProcStatusField(shim.pid(), "RssFile");
  const long released_kib = std::stol(match[2].str());
  EXPECT_GT(std::stol(match[1].str()), 0);
  EXPECT_GT(released_kib, 2048) << "start-up leaves more than 2 MiB of code mapped";
  EXPECT_LT(after, before - 2048) << "RssFile " << before << " KiB before, " << after
                                  << " KiB after the release";

  const cri::AuthConfig kubelet_auth = MakeAuth(kKubeletUser, kKubeletPassword);
  grpc::Status pull = client.PullImage("nginx:latest", &kubelet_auth, nullptr, kPull);
  ASSERT_TRUE(pull.ok()) << Describe(pull) << "\n" << TailLines(shim.Log());
  cri::ImageStatusResponse status;
  ASSERT_TRUE(client.ImageStatus("nginx:latest", &status, kQuick).ok());
  EXPECT_TRUE(status.has_image());
  EXPECT_TRUE(client.Version("v1", &version, kQuick).ok());
  EXPECT_TRUE(shim.Running());
  std::cout << "[figures] RssFile " << before << " KiB before the release, " << after
            << " KiB after (" << released_kib << " KiB released), "
            << ProcStatusField(shim.pid(), "RssFile") << " KiB after a pull and status calls\n";
}

// An idle shim leaves the node alone: its event loop (the main thread) wakes only for the
// runtime check every 5 s, not to look for configuration changes, which it is told of. Counted as
// the loop thread's voluntary context switches (one per wake-up from epoll_wait) over 10 s.
TEST_F(OperationsE2E, AnIdleLoopWakesOnlyForTheRuntimeCheck) {
  ShimProcess& shim = NewShim({});
  shim.Start();
  CriClient client(socket_);
  cri::VersionResponse version;
  ASSERT_TRUE(client.Version("v1", &version, kQuick).ok());
  // Past the start-up page release (2 s after the start), which wakes the loop once.
  ASSERT_TRUE(
      WaitUntil([&] { return Contains(shim.Log(), "start-up pages released"); }, 10s, 100ms))
      << TailLines(shim.Log());
  const long before = ProcStatusField(shim.pid(), "voluntary_ctxt_switches");
  std::this_thread::sleep_for(10s);
  const long wakes = ProcStatusField(shim.pid(), "voluntary_ctxt_switches") - before;
  EXPECT_LE(wakes, 4) << "the idle loop woke " << wakes << " times in 10 s";
  EXPECT_TRUE(client.Version("v1", &version, kQuick).ok());
  std::cout << "[figures] idle loop wake-ups in 10 s: " << wakes << "\n";
}

// ---- Logs -------------------------------------------------------------------------------------

int CountDebugRelayLines(const std::string& log) {
  int n = 0;
  for (const auto& line : Lines(log)) {
    if (Contains(line, " debug ") && Contains(line, "/runtime.v1.RuntimeService/Version")) ++n;
  }
  return n;
}

// --debug shows every relayed call at debug level; without it no debug line appears at all.
TEST_F(OperationsE2E, DebugFlagShowsRelayedCalls) {
  for (bool debug : {true, false}) {
    SCOPED_TRACE(debug ? "--debug" : "no --debug");
    ShimProcess& shim = NewShim({.debug_flag = debug});
    shim.Start();
    CriClient client(socket_);
    cri::VersionResponse version;
    ASSERT_TRUE(client.Version("v1", &version, kQuick).ok());
    shim.Stop();
    std::string log = shim.Log();
    if (debug) {
      EXPECT_GE(CountDebugRelayLines(log), 1) << TailLines(log);
    } else {
      EXPECT_EQ(CountDebugRelayLines(log), 0) << TailLines(log);
      EXPECT_FALSE(Contains(log, " debug ")) << TailLines(log);
    }
  }
}

// `debug` in the file switches detail on and off live, on reload, without a restart.
TEST_F(OperationsE2E, DebugSwitchesLiveOnReload) {
  ShimProcess& shim = NewShim({});
  shim.Start();
  CriClient client(socket_);
  cri::VersionResponse version;
  ASSERT_TRUE(client.Version("v1", &version, kQuick).ok());
  EXPECT_EQ(CountDebugRelayLines(shim.Log()), 0);
  double signals = 0;
  // As config management does: a new file renamed into place, then `systemctl reload` (SIGHUP).
  // Once the signal's reload is counted, the new file is in effect (the watcher may have
  // applied it a moment earlier).
  auto reload_with = [&](bool debug) {
    WriteFile(
        config_path_ + ".new",
        ConfigYaml(socket_, containerd_->Socket(), registry_->Address(), metrics_address_, debug),
        0600);
    ASSERT_EQ(rename((config_path_ + ".new").c_str(), config_path_.c_str()), 0);
    ASSERT_TRUE(shim.Signal(SIGHUP));
    ++signals;
    ASSERT_TRUE(WaitForMetric("image_cri_shim_config_reloads_total",
                              {{"source", "signal"}, {"result", "ok"}}, signals))
        << TailLines(shim.Log());
  };
  reload_with(true);
  ASSERT_TRUE(client.Version("v1", &version, kQuick).ok());
  EXPECT_TRUE(WaitUntil([&] { return CountDebugRelayLines(shim.Log()) >= 1; }, 5s))
      << "debug: true did not switch debug lines on\n"
      << TailLines(shim.Log());
  int after_on = CountDebugRelayLines(shim.Log());
  reload_with(false);
  ASSERT_TRUE(client.Version("v1", &version, kQuick).ok());
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(CountDebugRelayLines(shim.Log()), after_on)
      << "debug: false did not switch debug lines off\n"
      << TailLines(shim.Log());
}

// A pull and a reload with debug on: the most a log says about a working pull. Every line is in
// the format and no credential shows (TearDown).
TEST_F(OperationsE2E, LogLinesOfPullsKeepTheFormatAndNoSecret) {
  ShimProcess& shim = NewShim({.debug_flag = true});
  shim.Start();
  CriClient client(socket_);
  const cri::AuthConfig kubelet_auth = MakeAuth(kKubeletUser, kKubeletPassword);
  EXPECT_TRUE(client.PullImage("nginx:latest", &kubelet_auth, nullptr, kPull).ok());
  cri::VersionResponse version;
  EXPECT_TRUE(client.Version("v1", &version, kQuick).ok());
  shim.Signal(SIGHUP);
  WaitForMetric("image_cri_shim_config_reloads_total", {{"source", "signal"}, {"result", "ok"}}, 1);
  EXPECT_TRUE(shim.Stop().Success());
  EXPECT_GE(Lines(shim.Log()).size(), 5u) << shim.Log();
}

// A pull the registry fails (unknown image): the runtime's error text holds quotes, and a
// quoted value must escape them, or the line cannot be split into key=value pairs.
TEST_F(OperationsE2E, FailedPullLogLineQuotesItsError) {
  ShimProcess& shim = NewShim({});
  shim.Start();
  CriClient client(socket_);
  EXPECT_FALSE(client.PullImage("no/such-image:1", nullptr, nullptr, kPull).ok());
  EXPECT_TRUE(shim.Stop().Success());
}

}  // namespace
}  // namespace shim::testing
