// The asynchronous Kubernetes API client (kube/api_client.h) where the network cannot help: a
// worker stuck inside getaddrinfo, which a cancel cannot interrupt. This binary interposes
// getaddrinfo: the name "stuck-dns.test" blocks until the test releases it (every other name
// goes to the real resolver, and no test here needs one). It also interposes eventfd and
// pthread_create, which fail on demand.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netdb.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "kube/api_client.h"

namespace {

constexpr char kStuckName[] = "stuck-dns.test";

struct StuckResolver {
  std::mutex mutex;
  std::condition_variable changed;
  int inside = 0;         // calls blocked now
  int returned = 0;       // calls that came back
  bool released = false;  // let every blocked call return (EAI_NONAME)
};

StuckResolver& Stuck() {
  static StuckResolver* stuck = new StuckResolver;  // never destroyed: workers may outlive tests
  return *stuck;
}

}  // namespace

std::atomic<bool> g_fail_eventfd{false};
std::atomic<bool> g_fail_pthread_create{false};

extern "C" int eventfd(unsigned int count, int flags) noexcept {
  using Real = int (*)(unsigned int, int);
  static Real real = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "eventfd"));
  if (g_fail_eventfd) {
    errno = EMFILE;
    return -1;
  }
  return real(count, flags);
}

extern "C" int pthread_create(pthread_t* thread, const pthread_attr_t* attr, void* (*start)(void*),
                              void* arg) noexcept {
  using Real = int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
  static Real real = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "pthread_create"));
  if (g_fail_pthread_create) return EAGAIN;
  return real(thread, attr, start, arg);
}

extern "C" int getaddrinfo(const char* node, const char* service, const addrinfo* hints,
                           addrinfo** found) noexcept {
  using Real = int (*)(const char*, const char*, const addrinfo*, addrinfo**);
  static Real real = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "getaddrinfo"));
  if (node == nullptr || std::strcmp(node, kStuckName) != 0) {
    return real(node, service, hints, found);
  }
  StuckResolver& stuck = Stuck();
  std::unique_lock lock(stuck.mutex);
  ++stuck.inside;
  stuck.changed.notify_all();
  stuck.changed.wait(lock, [&] { return stuck.released; });
  --stuck.inside;
  ++stuck.returned;
  stuck.changed.notify_all();
  return EAI_NONAME;
}

namespace shim::kube {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::chrono::microseconds ThreadCpu() {
  rusage usage{};
  getrusage(RUSAGE_THREAD, &usage);
  return std::chrono::seconds(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         std::chrono::microseconds(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

Credentials StuckServer() {
  Credentials c;
  c.source = "test";
  c.server = std::string("https://") + kStuckName + ":6443";
  c.token = "t";
  return c;
}

// The deadline is reported when it passes (plus a short grace), even though the worker cannot
// be interrupted; the owner does not spin while it waits; the worker is joined later, and the
// client's destructor joins it.
TEST(ApiClientDeadline, IsReportedWhileTheWorkerIsInsideGetaddrinfo) {
  auto client = MakeApiClient(StuckServer(), {}, net::ProxyEnv{});
  std::optional<Response> done;
  auto started = Clock::now();
  ApiClient::RequestId id =
      client->StartWatch("/api/v1/namespaces/kube-system/configmaps?watch=1", 300ms, nullptr,
                         [&](Response r) { done = std::move(r); });
  {
    std::unique_lock lock(Stuck().mutex);
    ASSERT_TRUE(Stuck().changed.wait_for(lock, 5s, [] { return Stuck().inside == 1; }));
  }
  auto cpu_before = ThreadCpu();
  while (!done && Clock::now() - started < 10s) client->Poll(1000ms, {});
  auto cpu = ThreadCpu() - cpu_before;
  auto elapsed = Clock::now() - started;
  ASSERT_TRUE(done.has_value()) << "the deadline was never reported";
  EXPECT_EQ(done->status, 0);
  EXPECT_NE(done->error.find("timed out after 300 ms"), std::string::npos) << done->error;
  // 300 ms and the grace; the worker itself stays blocked until the test releases it.
  EXPECT_LT(elapsed, 5s);
  EXPECT_EQ(client->InFlight(), 0u);
  // The owner waited (with the worker still blocked) without a busy loop: a spinning Poll
  // would have burnt the whole grace (~250 ms) of CPU.
  EXPECT_LT(cpu, 100ms) << cpu.count() << " us of CPU while waiting";
  client->Cancel(id);  // already done: no-op
  {
    std::lock_guard lock(Stuck().mutex);
    EXPECT_EQ(Stuck().inside, 1) << "the worker is still blocked";
  }

  // The destructor joins the abandoned worker: it returns only after the resolver let go.
  std::thread release([] {
    std::this_thread::sleep_for(200ms);
    std::lock_guard lock(Stuck().mutex);
    Stuck().released = true;
    Stuck().changed.notify_all();
  });
  client.reset();
  {
    std::lock_guard lock(Stuck().mutex);
    EXPECT_EQ(Stuck().returned, 1);
    EXPECT_EQ(Stuck().inside, 0);
  }
  release.join();
}

// A plain HTTP server streaming `total` bytes of 1 KiB lines as fast as it can, counting what
// it managed to write.
class FastStream {
 public:
  explicit FastStream(size_t total) : total_(total) {
    server_.Get(R"(/api/v1/.*)", [this](const httplib::Request&, httplib::Response& response) {
      response.set_chunked_content_provider("application/json",
                                            [this](size_t, httplib::DataSink& sink) {
                                              if (sent_ >= total_) {
                                                sink.done();
                                                return true;
                                              }
                                              std::string chunk;
                                              for (int i = 0; i < 64; ++i)
                                                chunk += std::string(1023, 'x') + "\n";
                                              if (!sink.write(chunk.data(), chunk.size()))
                                                return false;
                                              sent_ += chunk.size();
                                              return true;
                                            });
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) throw std::runtime_error("FastStream: cannot listen on 127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(1ms);
  }
  ~FastStream() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  size_t sent() const { return sent_; }

 private:
  size_t total_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::atomic<size_t> sent_{0};
};

// An owner that does not take the lines of a watch slows the download down: the worker stops
// reading at about 8 MiB of lines (plus what the sockets hold) instead of buffering everything;
// once the owner drains, every line arrives, none lost.
TEST(ApiClientWatch, ASlowOwnerSlowsTheDownload) {
  constexpr size_t kTotal = 96 << 20;
  FastStream stream(kTotal);
  Credentials c;
  c.server = "http://127.0.0.1:" + std::to_string(stream.port());
  auto client = MakeApiClient(c, {}, net::ProxyEnv{});
  size_t lines = 0;
  std::optional<Response> done;
  client->StartWatch(
      "/api/v1/namespaces/kube-system/configmaps?watch=1", 60s,
      [&](std::string_view line) {
        EXPECT_EQ(line.size(), 1023u);
        ++lines;
      },
      [&](Response r) { done = std::move(r); });
  std::this_thread::sleep_for(1500ms);  // the owner is busy elsewhere
  size_t stalled_at = stream.sent();
  EXPECT_GT(stalled_at, 4u << 20);
  EXPECT_LT(stalled_at, 40u << 20) << "the worker kept reading for an owner that did not drain";
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(stream.sent(), stalled_at) << "not stalled";
  auto until = Clock::now() + 30s;
  while (!done && Clock::now() < until) client->Poll(1000ms, {});
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->status, 200) << done->error;
  EXPECT_EQ(done->error, "");
  EXPECT_EQ(lines, kTotal / 1024);
}

// A watch cancelled while its worker waits for the owner to drain: the worker ends (the client
// can be destroyed, which joins it).
TEST(ApiClientWatch, CancelReleasesAWorkerWaitingForTheOwner) {
  FastStream stream(64 << 20);
  Credentials c;
  c.server = "http://127.0.0.1:" + std::to_string(stream.port());
  auto client = MakeApiClient(c, {}, net::ProxyEnv{});
  ApiClient::RequestId id = client->StartWatch("/api/v1/namespaces/kube-system/configmaps?watch=1",
                                               60s, nullptr, [](Response) {});
  std::this_thread::sleep_for(1000ms);
  client->Cancel(id);
  auto started = Clock::now();
  client.reset();
  EXPECT_LT(Clock::now() - started, 5s);
}

// Without an eventfd (out of descriptors) or a thread (out of threads), a request fails with
// the reason, reported through its callback like any other failure; nothing crashes.
TEST(ApiClientStart, FailuresToStartAreReportedAsTheRequestsError) {
  Credentials c;
  c.server = "http://127.0.0.1:1";
  {
    g_fail_eventfd = true;
    auto client = MakeApiClient(c, {}, net::ProxyEnv{});
    g_fail_eventfd = false;
    Response got = client->Get("/api/v1/namespaces/kube-system/configmaps/x");
    EXPECT_EQ(got.status, 0);
    EXPECT_NE(got.error.find("cannot create an eventfd"), std::string::npos) << got.error;
  }
  {
    auto client = MakeApiClient(c, {}, net::ProxyEnv{});
    g_fail_pthread_create = true;
    std::optional<Response> done;
    client->StartWatch("/api/v1/namespaces/kube-system/configmaps?watch=1", 10s, nullptr,
                       [&](Response r) { done = std::move(r); });
    g_fail_pthread_create = false;
    EXPECT_FALSE(done.has_value()) << "reported from inside Start";
    client->Poll(1000ms, {});
    ASSERT_TRUE(done.has_value());
    EXPECT_EQ(done->status, 0);
    EXPECT_NE(done->error.find("cannot start a thread for the request"), std::string::npos)
        << done->error;
    EXPECT_EQ(client->InFlight(), 0u);
  }
}

}  // namespace
}  // namespace shim::kube
