// net::HttpGet (net/http_client.h) where the network must misbehave on purpose: this binary
// interposes getaddrinfo so that test names resolve to chosen loopback addresses without DNS
// ("fallback.test": 127.0.0.2, then 127.0.0.1; any other name under .test: 127.0.0.1); every
// other name goes to the real resolver.
#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "kube_api_server.h"
#include "net/http_client.h"
#include "subprocess.h"
#include "temp_dir.h"
#include "test_util.h"

extern "C" int getaddrinfo(const char* node, const char* service, const addrinfo* hints,
                           addrinfo** found) noexcept {
  using Real = int (*)(const char*, const char*, const addrinfo*, addrinfo**);
  static Real real = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "getaddrinfo"));
  std::string_view name = node != nullptr ? node : "";
  if (!name.ends_with(".test")) return real(node, service, hints, found);
  addrinfo numeric{};
  numeric.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  numeric.ai_socktype = SOCK_STREAM;
  if (name != "fallback.test") return real("127.0.0.1", service, &numeric, found);
  // Two numeric lookups chained: glibc's freeaddrinfo frees node by node.
  addrinfo* first = nullptr;
  addrinfo* second = nullptr;
  if (int rc = real("127.0.0.2", service, &numeric, &first); rc != 0) return rc;
  if (int rc = real("127.0.0.1", service, &numeric, &second); rc != 0) {
    freeaddrinfo(first);
    return rc;
  }
  addrinfo* last = first;
  while (last->ai_next != nullptr) last = last->ai_next;
  last->ai_next = second;
  *found = first;
  return 0;
}

namespace shim::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A plain HTTP server on 127.0.0.1:<any port>, serving GET /ok.
class PlainServer {
 public:
  PlainServer() {
    server_.Get("/ok", [](const httplib::Request&, httplib::Response& response) {
      response.set_content("fine", "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) throw std::runtime_error("PlainServer: cannot listen on 127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    if (!WaitUntil([this] { return server_.is_running(); }, 10s, 5ms)) {
      std::fprintf(stderr, "PlainServer: the accept loop did not start within 10 s\n");
      std::abort();
    }
  }
  ~PlainServer() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

// A listener on `ip`:`port` whose accept queue is full: further SYNs are dropped, so a connect
// to it times out, as to a black-holed route.
class BlackHole {
 public:
  BlackHole(const char* ip, int port) {
    listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, ip, &address.sin_addr);
    if (listener_ < 0 ||
        bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        listen(listener_, 0) != 0) {
      throw std::runtime_error(std::string("BlackHole: ") + std::strerror(errno));
    }
    // The queue holds one connection (backlog 0); the second stays half-open.
    for (int i = 0; i < 2; ++i) {
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
      fillers_.push_back(fd);
      std::this_thread::sleep_for(50ms);
    }
  }
  ~BlackHole() {
    for (int fd : fillers_) close(fd);
    close(listener_);
  }

 private:
  int listener_ = -1;
  std::vector<int> fillers_;
};

// An address that times out does not end the connect: the next one gets the rest of the time
// (a black-holed IPv6 route falls back to IPv4, as with libcurl and Go).
TEST(HttpGet, AnAddressThatTimesOutFallsBackToTheNext) {
  PlainServer server;
  BlackHole hole("127.0.0.2", server.port());
  net::HttpRequest request;
  request.url = "http://fallback.test:" + std::to_string(server.port()) + "/ok";
  request.connect_timeout = 2s;
  net::ProxyEnv no_proxy;
  request.proxy_env = &no_proxy;
  std::string body;
  auto started = Clock::now();
  net::HttpResponse response = net::HttpGet(request, [&](int, std::string_view data) {
    body.append(data);
    return true;
  });
  auto elapsed = Clock::now() - started;
  EXPECT_EQ(response.status, 200) << response.error;
  EXPECT_EQ(body, "fine");
  // 127.0.0.2 got its half of the 2 s (two addresses) and timed out, then 127.0.0.1 answered
  // (had the first address kept the whole 2 s, the answer above would be a timeout).
  EXPECT_GE(elapsed, 900ms);
}

// An HTTPS server on 127.0.0.1:<any port> with the given certificate, serving GET /ok.
class TlsServer {
 public:
  TlsServer(const std::string& cert, const std::string& key) : server_(cert.c_str(), key.c_str()) {
    if (!server_.is_valid()) throw std::runtime_error("TlsServer: cannot load " + cert);
    server_.Get("/ok", [](const httplib::Request&, httplib::Response& response) {
      response.set_content("fine", "text/plain");
    });
    // A watch-like stream: a line every 20 ms for up to 5 s.
    server_.Get("/stream", [](const httplib::Request&, httplib::Response& response) {
      auto until = Clock::now() + 5s;
      response.set_chunked_content_provider("application/json",
                                            [until](size_t, httplib::DataSink& sink) {
                                              std::this_thread::sleep_for(20ms);
                                              if (Clock::now() > until) {
                                                sink.done();
                                                return true;
                                              }
                                              return sink.write("{\"type\":\"BOOKMARK\"}\n", 20);
                                            });
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) throw std::runtime_error("TlsServer: cannot listen on 127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    if (!WaitUntil([this] { return server_.is_running(); }, 10s, 5ms)) {
      std::fprintf(stderr, "TlsServer: the accept loop did not start within 10 s\n");
      std::abort();
    }
  }
  ~TlsServer() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  httplib::SSLServer& server() { return server_; }

 private:
  httplib::SSLServer server_;
  int port_ = 0;
  std::thread thread_;
};

// GET https://host:port/path trusting `ca_pem` only.
net::HttpResponse GetTrusting(const std::string& ca_pem, const std::string& host, int port,
                              const net::OnBody& on_body, net::CancelToken* cancel,
                              const std::string& path) {
  net::HttpRequest request;
  request.url = "https://" + host + ":" + std::to_string(port) + path;
  request.tls.system_roots = false;
  request.tls.ca_pem = ca_pem;
  request.connect_timeout = 5s;
  request.read_timeout = 5s;
  static const net::ProxyEnv no_proxy;
  request.proxy_env = &no_proxy;
  return net::HttpGet(request, on_body, cancel);
}

// Five watches of https://127.0.0.1:port/stream, each cancelled part-way (more lines are on
// their way); how many streamed and were cancelled.
int StreamAndCancelFiveWatches(const std::string& ca_pem, int port) {
  int streamed = 0;
  for (int i = 0; i < 5; ++i) {
    net::CancelToken cancel;
    std::atomic<bool> bytes{false};
    std::thread canceller([&] {
      while (!bytes) std::this_thread::sleep_for(1ms);
      std::this_thread::sleep_for(30ms);
      cancel.Cancel();
    });
    net::HttpResponse got = GetTrusting(
        ca_pem, "127.0.0.1", port,
        [&](int, std::string_view) {
          bytes = true;
          return true;
        },
        &cancel, "/stream");
    bytes = true;  // also when nothing came: the canceller must end
    canceller.join();
    if (got.cancelled && got.status == 200) ++streamed;
  }
  return streamed;
}

constexpr char kSigpipeClientPort[] = "SHIM_TEST_SIGPIPE_CLIENT_PORT";
constexpr char kSigpipeClientCa[] = "SHIM_TEST_SIGPIPE_CLIENT_CA";

// The client half of Tls.ACancelledWatchDoesNotKillTheProcessWithSigpipe, which runs this test
// binary again for it, with SIGPIPE at its default action; skipped when run on its own. Its exit
// status is the verdict: 0 when all five watches streamed and were cancelled.
TEST(TlsSigpipeClient, FiveWatchesCancelledPartWay) {
  const char* port = std::getenv(kSigpipeClientPort);
  const char* ca = std::getenv(kSigpipeClientCa);
  if (port == nullptr || ca == nullptr) {
    GTEST_SKIP() << "the client half of Tls.ACancelledWatchDoesNotKillTheProcessWithSigpipe";
  }
  signal(SIGPIPE, SIG_DFL);
  _exit(StreamAndCancelFiveWatches(ReadFile(ca), std::atoi(port)) == 5 ? 0 : 3);
}

class Tls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("http-client-pki");
    pki_ = new TestPki(MakeTestPki(dir_->path()));
  }
  static void TearDownTestSuite() {
    delete pki_;
    delete dir_;
  }
  // A server certificate signed by the test CA: subject CN `cn`, and `san` as subjectAltName
  // ("" = none). Returns {cert, key}.
  static std::pair<std::string, std::string> Issue(const std::string& name, const std::string& cn,
                                                   const std::string& san) {
    std::string cert = dir_->File(name + ".crt");
    std::string key = dir_->File(name + ".key");
    std::string csr = dir_->File(name + ".csr");
    std::string ext = dir_->File(name + ".ext");
    WriteFile(ext, "extendedKeyUsage=serverAuth\n" +
                       (san.empty() ? std::string() : "subjectAltName=" + san + "\n"));
    RunOrThrow({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=" + cn, "-keyout", key,
                "-out", csr});
    RunOrThrow({"openssl", "x509", "-req", "-in", csr, "-CA", pki_->ca_cert, "-CAkey", pki_->ca_key,
                "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", cert});
    return {cert, key};
  }
  // GET https://host:port/path trusting the test CA only.
  static net::HttpResponse Get(const std::string& host, int port, const net::OnBody& on_body = {},
                               net::CancelToken* cancel = nullptr,
                               const std::string& path = "/ok") {
    return GetTrusting(pki_->ca_pem, host, port, on_body, cancel, path);
  }

  static TempDir* dir_;
  static TestPki* pki_;
};

TempDir* Tls::dir_ = nullptr;
TestPki* Tls::pki_ = nullptr;

// The host name is checked as Go checks it: the subjectAltName only (a CN naming the host does
// not count), and no partial wildcards.
TEST_F(Tls, TheHostIsCheckedAsGoChecksIt) {
  {
    auto [cert, key] = Issue("exact", "whatever", "DNS:exact.example.test");
    TlsServer server(cert, key);
    net::HttpResponse got = Get("exact.example.test", server.port());
    EXPECT_EQ(got.status, 200) << got.error;  // the set-up itself is sound
  }
  {
    auto [cert, key] = Issue("whole-wildcard", "whatever", "DNS:*.example.test");
    TlsServer server(cert, key);
    net::HttpResponse got = Get("registry.example.test", server.port());
    EXPECT_EQ(got.status, 200) << got.error;
  }
  {
    auto [cert, key] = Issue("cn-only", "cn-only.example.test", "IP:127.0.0.1");
    TlsServer server(cert, key);
    net::HttpResponse got = Get("cn-only.example.test", server.port());
    EXPECT_EQ(got.status, 0);
    EXPECT_NE(got.error.find("not trusted"), std::string::npos) << got.error;
  }
  {
    auto [cert, key] = Issue("partial-wildcard", "whatever", "DNS:reg*.example.test");
    TlsServer server(cert, key);
    net::HttpResponse got = Get("registry.example.test", server.port());
    EXPECT_EQ(got.status, 0);
    EXPECT_NE(got.error.find("not trusted"), std::string::npos) << got.error;
  }
}

// A TLS watch cancelled part-way: OpenSSL then writes its close_notify on a socket that is shut
// down, which raises SIGPIPE. With SIGPIPE at its default action (httplib's servers set it to
// ignored, the daemon may not), the process must survive. The client runs in a process of its
// own (its SIG_DFL stays there; the server stays here, where SIGPIPE is ignored), whose exit
// status says how it ended. That process is this binary run again (TlsSigpipeClient), not a
// mere fork: the forked copy of a threaded process inherits whatever locks the other threads
// held at the fork (AddressSanitizer's allocator lock among them) and hung at its first thread.
TEST_F(Tls, ACancelledWatchDoesNotKillTheProcessWithSigpipe) {
  TlsServer server(pki_->server_cert, pki_->server_key);
  Subprocess client({.argv = {std::filesystem::read_symlink("/proc/self/exe").string(),
                              "--gtest_filter=TlsSigpipeClient.FiveWatchesCancelledPartWay"},
                     .env = {{kSigpipeClientPort, std::to_string(server.port())},
                             {kSigpipeClientCa, pki_->ca_cert}},
                     .log_path = dir_->File("sigpipe-client.log")});
  client.Start();
  std::optional<ExitStatus> exit = client.WaitExit(60s);
  ASSERT_TRUE(exit.has_value()) << "the client did not finish: " << client.LogText();
  EXPECT_NE(exit->signal, SIGPIPE) << "the client was killed by SIGPIPE";
  EXPECT_TRUE(exit->Success()) << exit->ToString() << ": not every watch streamed and was "
                               << "cancelled\n"
                               << client.LogText();
}

// A URL HttpGet refuses is quoted without its credentials (nor path or query).
TEST(HttpGet, ARefusedUrlIsQuotedWithoutCredentials) {
  auto error = [](const std::string& url) {
    net::HttpRequest request;
    request.url = url;
    return net::HttpGet(request, nullptr).error;
  };
  std::string got = error("ftp://user:s3cret@files.example.test/x?token=t0ken");
  EXPECT_NE(got.find("not an http(s) URL: ftp://files.example.test"), std::string::npos) << got;
  for (const std::string& url :
       {std::string("ftp://user:s3cret@files.example.test/x?token=t0ken"),
        std::string("https://user:s3cret@bad host.test/"),
        std::string("https://user:s3cret@host.test:99999/"), std::string("user:s3cret@host.test/"),
        std::string("https://a:b@c:s3cret@host.test:0/")}) {
    got = error(url);
    EXPECT_NE(got.find("not an http(s) URL"), std::string::npos) << got;
    EXPECT_EQ(got.find("s3cret"), std::string::npos) << got;
    EXPECT_EQ(got.find("t0ken"), std::string::npos) << got;
  }
}

// Answers each connection on 127.0.0.1:<any port> with an empty 200 and records the request
// head; one connection at a time.
class HeadRecorder {
 public:
  HeadRecorder() {
    listener_ = BindLoopback(&port_, "HeadRecorder");
    if (listen(listener_, 8) != 0) {
      throw std::runtime_error(std::string("HeadRecorder: ") + std::strerror(errno));
    }
    thread_ = std::thread([this] {
      for (;;) {
        int fd = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) return;
        std::string head;
        char c;
        while (!head.ends_with("\r\n\r\n") && recv(fd, &c, 1, 0) == 1) head += c;
        {
          std::lock_guard lock(mutex_);
          heads_.push_back(head);
        }
        std::string answer = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        send(fd, answer.data(), answer.size(), MSG_NOSIGNAL);
        close(fd);
      }
    });
  }
  ~HeadRecorder() {
    shutdown(listener_, SHUT_RDWR);
    thread_.join();
    close(listener_);
  }
  int port() const { return port_; }
  std::string Last() const {
    std::lock_guard lock(mutex_);
    return heads_.empty() ? "" : heads_.back();
  }

 private:
  int listener_ = -1;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::vector<std::string> heads_;
};

// The Host header of an IPv6 host has its brackets (cpp-httplib alone sends "Host: fd00::1"),
// and the port unless it is the scheme's default. Plain http through a proxy shows the header
// without needing the address itself.
TEST(HttpGet, TheHostHeaderOfAnIpv6HostHasBrackets) {
  HeadRecorder proxy;
  net::ProxyEnv env{.http_proxy = "http://127.0.0.1:" + std::to_string(proxy.port())};
  auto host_header = [&](const std::string& url) {
    net::HttpRequest request;
    request.url = url;
    request.proxy_env = &env;
    net::HttpResponse got = net::HttpGet(request, nullptr);
    EXPECT_EQ(got.status, 200) << url << ": " << got.error;
    std::string head = proxy.Last();
    size_t at = head.find("\r\nHost: ");
    if (at == std::string::npos) return "(none) in " + head;
    at += 8;
    return head.substr(at, head.find("\r\n", at) - at);
  };
  EXPECT_EQ(host_header("http://[fd00::1]/v2/"), "[fd00::1]");
  EXPECT_EQ(host_header("http://[fd00::1]:5000/v2/"), "[fd00::1]:5000");
  EXPECT_EQ(host_header("http://registry.example.test/v2/"), "registry.example.test");
  EXPECT_EQ(host_header("http://registry.example.test:5000/v2/"), "registry.example.test:5000");
}

}  // namespace
}  // namespace shim::testing
