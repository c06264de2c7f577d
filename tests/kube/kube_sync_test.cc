// The REST client and the ConfigMap sync loop against the Kubernetes API test server: TLS and
// every way of authenticating, read, watch, resume after a dropped stream, relist after 410,
// absent and deleted ConfigMaps, and the cost in requests.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>
#include <thread>

#include "kube/api_client.h"
#include "kube/configmap_sync.h"
#include "kube_api_server.h"
#include "temp_dir.h"
#include "test_util.h"

namespace shim::testing {
namespace {

using namespace std::chrono_literals;

// Runs a ConfigMapSync on its own thread, the way the daemon's configuration thread does, and
// records what it delivers.
class SyncRunner {
 public:
  SyncRunner(kube::Credentials credentials, kube::SyncOptions options) {
    wake_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    kube::WaitHooks hooks;
    hooks.fds = {wake_};
    hooks.on_wake = [this] { return !stop_; };
    client_ = kube::MakeApiClient(std::move(credentials), std::move(hooks));
    sync_ = std::make_unique<kube::ConfigMapSync>(
        *client_, options,
        kube::ConfigMapSync::Callbacks{.on_payload =
                                           [this](const std::optional<std::string>& p) {
                                             std::lock_guard lock(mutex_);
                                             payloads_.push_back(p.value_or("<none>"));
                                           },
                                       .on_state =
                                           [this](kube::SyncState s, const std::string&) {
                                             std::lock_guard lock(mutex_);
                                             states_.push_back(s);
                                           }});
    thread_ = std::thread([this] {
      while (!stop_) {
        auto delay = sync_->Step();
        auto until = std::chrono::steady_clock::now() + delay;
        while (!stop_ && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(5ms);
      }
    });
  }
  ~SyncRunner() {
    stop_ = true;
    uint64_t one = 1;
    (void)!write(wake_, &one, sizeof one);
    thread_.join();
    close(wake_);
  }
  std::vector<std::string> payloads() const {
    std::lock_guard lock(mutex_);
    return payloads_;
  }
  std::string last_payload() const {
    std::lock_guard lock(mutex_);
    return payloads_.empty() ? "" : payloads_.back();
  }
  bool SawState(kube::SyncState state) const {
    std::lock_guard lock(mutex_);
    return std::find(states_.begin(), states_.end(), state) != states_.end();
  }
  bool WaitForPayload(const std::string& value, std::chrono::milliseconds timeout) const {
    return WaitUntil([&] { return last_payload() == value; }, timeout);
  }

 private:
  int wake_ = -1;
  std::atomic<bool> stop_{false};
  std::unique_ptr<kube::ApiClient> client_;
  std::unique_ptr<kube::ConfigMapSync> sync_;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::vector<std::string> payloads_;
  std::vector<kube::SyncState> states_;
};

class KubeApi : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("kube-pki");
    pki_ = new TestPki(MakeTestPki(dir_->path()));
  }
  static void TearDownTestSuite() {
    delete pki_;
    delete dir_;
  }
  void SetUp() override {
    server_ = std::make_unique<KubeApiServer>(
        KubeApiServerOptions{.cert_path = pki_->server_cert, .key_path = pki_->server_key});
    server_->Start();
  }

  kube::Credentials Creds() const {
    kube::Credentials c;
    c.source = "test";
    c.server = server_->Url();
    c.ca_data = pki_->ca_pem;
    c.token = server_->token();
    return c;
  }
  static kube::SyncOptions Options(double scale = 1.0) {
    kube::SyncOptions o;
    o.watch_timeout = 30s;
    o.backoff_initial = 50ms;
    o.backoff_max = 200ms;
    return scale == 1.0 ? o : o.Scaled(scale);
  }
  kube::ReadOnce Read(const kube::Credentials& c) {
    auto api = kube::MakeApiClient(c);
    return kube::ReadConfigMapOnce(*api, Options());
  }

  static TempDir* dir_;
  static TestPki* pki_;
  std::unique_ptr<KubeApiServer> server_;
};

TempDir* KubeApi::dir_ = nullptr;
TestPki* KubeApi::pki_ = nullptr;

// The test server holds its port from construction: while it is stopped nobody else can bind
// it, a connection is refused (the API is down, not hanging), and Start listens on it again.
TEST_F(KubeApi, TheTestServerHoldsItsPortWhileStopped) {
  int port = server_->port();
  ASSERT_GT(port, 0);
  server_->Stop();
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  int other = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(other, 0);
  EXPECT_NE(bind(other, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  EXPECT_EQ(errno, EADDRINUSE);
  close(other);
  int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(client, 0);
  EXPECT_NE(connect(client, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  EXPECT_EQ(errno, ECONNREFUSED);
  close(client);
  server_->Start();
  EXPECT_EQ(server_->port(), port);
  EXPECT_EQ(Read(Creds()).state, kube::SyncState::kAbsent);
}

TEST_F(KubeApi, ReadWithTokenOverVerifiedTls) {
  server_->SetData({{"registries.yaml", "debug: true\n"}, {"other", "x"}});
  kube::ReadOnce read = Read(Creds());
  EXPECT_EQ(read.state, kube::SyncState::kSynced) << read.detail;
  EXPECT_EQ(read.payload, "debug: true\n");
  auto headers = server_->AuthorizationHeaders();
  ASSERT_EQ(headers.size(), 1u);
  EXPECT_EQ(headers[0], "Bearer " + server_->token());
}

TEST_F(KubeApi, AbsentObjectAbsentKeyAndAuthFailuresAreTold) {
  EXPECT_EQ(Read(Creds()).state, kube::SyncState::kAbsent);
  server_->SetData({{"other", "x"}});
  EXPECT_EQ(Read(Creds()).state, kube::SyncState::kKeyAbsent);

  kube::Credentials wrong = Creds();
  wrong.token = "wrong-token";
  kube::ReadOnce unauthorized = Read(wrong);
  EXPECT_EQ(unauthorized.state, kube::SyncState::kUnauthorized);
  EXPECT_NE(unauthorized.detail.find("401"), std::string::npos) << unauthorized.detail;
  EXPECT_EQ(unauthorized.detail.find("wrong-token"), std::string::npos) << unauthorized.detail;

  server_->SetAuthFailure(403);
  kube::ReadOnce forbidden = Read(Creds());
  EXPECT_EQ(forbidden.state, kube::SyncState::kUnauthorized);
  EXPECT_NE(forbidden.detail.find("forbidden"), std::string::npos) << forbidden.detail;
}

TEST_F(KubeApi, TlsIsVerifiedUnlessTheKubeconfigSaysOtherwise) {
  server_->SetData({{"registries.yaml", "x"}});
  kube::Credentials system_cas = Creds();
  system_cas.ca_data.clear();  // the test CA is not in the system store
  kube::ReadOnce read = Read(system_cas);
  EXPECT_EQ(read.state, kube::SyncState::kUnreachable);
  EXPECT_NE(read.detail.find("certificate"), std::string::npos) << read.detail;
  EXPECT_EQ(server_->counts().total, 0);

  system_cas.insecure_skip_tls_verify = true;
  EXPECT_EQ(Read(system_cas).state, kube::SyncState::kSynced);

  kube::Credentials ca_file = Creds();
  ca_file.ca_data.clear();
  ca_file.ca_file = pki_->ca_cert;
  EXPECT_EQ(Read(ca_file).state, kube::SyncState::kSynced);
}

TEST_F(KubeApi, TokenFileIsReadOnEveryRequest) {
  server_->SetData({{"registries.yaml", "x"}});
  std::string token_file = dir_->File("token");
  WriteFile(token_file, "stale\n");
  kube::Credentials c = Creds();
  c.token.clear();
  c.token_file = token_file;
  auto api = kube::MakeApiClient(c);
  EXPECT_EQ(kube::ReadConfigMapOnce(*api, Options()).state, kube::SyncState::kUnauthorized);
  WriteFile(token_file, server_->token() + "\n");  // rotated, as kubelet does
  EXPECT_EQ(kube::ReadConfigMapOnce(*api, Options()).state, kube::SyncState::kSynced);
}

TEST_F(KubeApi, ClientCertificateFromFilesOrData) {
  server_->Stop();
  KubeApiServer mtls({.cert_path = pki_->server_cert,
                      .key_path = pki_->server_key,
                      .client_ca_path = pki_->ca_cert});
  mtls.Start();
  mtls.SetData({{"registries.yaml", "x"}});
  kube::Credentials c;
  c.server = mtls.Url();
  c.ca_data = pki_->ca_pem;
  {
    auto api = kube::MakeApiClient(c);
    EXPECT_EQ(kube::ReadConfigMapOnce(*api, Options()).state, kube::SyncState::kUnreachable);
  }
  c.client_cert_file = pki_->client_cert;
  c.client_key_file = pki_->client_key;
  {
    auto api = kube::MakeApiClient(c);
    EXPECT_EQ(kube::ReadConfigMapOnce(*api, Options()).state, kube::SyncState::kSynced);
  }
  c.client_cert_file.clear();
  c.client_key_file.clear();
  c.client_cert_data = ReadFile(pki_->client_cert);
  c.client_key_data = ReadFile(pki_->client_key);
  {
    auto api = kube::MakeApiClient(c);
    kube::ReadOnce read = kube::ReadConfigMapOnce(*api, Options());
    EXPECT_EQ(read.state, kube::SyncState::kSynced) << read.detail;
  }
}

TEST_F(KubeApi, WatchDeliversChangesAtOnce) {
  server_->SetData({{"registries.yaml", "v1"}});
  SyncRunner sync(Creds(), Options());
  ASSERT_TRUE(sync.WaitForPayload("v1", 5s));
  ASSERT_TRUE(server_->WaitForOpenWatches(1, 5s));
  auto before = std::chrono::steady_clock::now();
  server_->SetData({{"registries.yaml", "v2"}});
  ASSERT_TRUE(sync.WaitForPayload("v2", 2s));
  EXPECT_LT(std::chrono::steady_clock::now() - before, 1s);
  server_->SetData({{"registries.yaml", "v2"}, {"unrelated", "y"}});  // same value: no delivery
  server_->SetData({{"registries.yaml", "v3"}});
  ASSERT_TRUE(sync.WaitForPayload("v3", 2s));
  EXPECT_EQ(sync.payloads(), (std::vector<std::string>{"v1", "v2", "v3"}));
  server_->Delete();
  ASSERT_TRUE(sync.WaitForPayload("<none>", 2s));
  EXPECT_EQ(server_->counts().gets, 1);
  EXPECT_EQ(server_->counts().watches, 1);
}

TEST_F(KubeApi, AbsentAtFirstThenCreatedArrivesThroughTheWatch) {
  SyncRunner sync(Creds(), Options());
  ASSERT_TRUE(server_->WaitForOpenWatches(1, 5s));
  EXPECT_TRUE(sync.SawState(kube::SyncState::kAbsent));
  server_->SetData({{"registries.yaml", "created"}});
  ASSERT_TRUE(sync.WaitForPayload("created", 2s));
  EXPECT_EQ(server_->counts().gets, 1);
}

TEST_F(KubeApi, DroppedWatchResumesWithoutLosingAChange) {
  server_->SetData({{"registries.yaml", "v1"}});
  SyncRunner sync(Creds(), Options());
  ASSERT_TRUE(server_->WaitForOpenWatches(1, 5s));
  // The change happens while no stream is open: the resumed watch (same resourceVersion)
  // replays it.
  server_->Stop();
  server_->SetData({{"registries.yaml", "while-down"}});
  server_->Start();
  ASSERT_TRUE(sync.WaitForPayload("while-down", 5s));
  ASSERT_TRUE(server_->WaitForOpenWatches(1, 5s));
  server_->DropWatches();
  server_->SetData({{"registries.yaml", "after-drop"}});
  ASSERT_TRUE(sync.WaitForPayload("after-drop", 5s));
  EXPECT_EQ(server_->counts().gets, 1) << "resumed from the resourceVersion, no relist";
  auto log = server_->RequestLog();
  bool resumed = std::any_of(log.begin(), log.end(), [](const std::string& line) {
    return line.find("watch=1") != std::string::npos &&
           line.find("resourceVersion=1000") != std::string::npos;
  });
  EXPECT_TRUE(resumed) << ::testing::PrintToString(log);
}

TEST_F(KubeApi, GoneMeansListAgainWithoutLosingAChange) {
  server_->SetData({{"registries.yaml", "v1"}});
  SyncRunner sync(Creds(), Options());
  ASSERT_TRUE(server_->WaitForOpenWatches(1, 5s));
  server_->Stop();
  server_->SetData({{"registries.yaml", "compacted-away"}});
  server_->Compact();
  server_->Start();
  ASSERT_TRUE(sync.WaitForPayload("compacted-away", 5s));
  EXPECT_EQ(server_->counts().gets, 2) << ::testing::PrintToString(server_->RequestLog());
}

TEST_F(KubeApi, UnreachableBacksOffAndRecovers) {
  server_->Stop();
  SyncRunner sync(Creds(), Options());
  ASSERT_TRUE(WaitUntil([&] { return sync.SawState(kube::SyncState::kUnreachable); }, 5s));
  server_->SetData({{"registries.yaml", "up"}});
  server_->Start();
  ASSERT_TRUE(sync.WaitForPayload("up", 5s));
}

TEST_F(KubeApi, AScaledHourCostsAtMostTwelveRequests) {
  // 600 s watches scaled by 1/300: an hour is 12 s.
  server_->SetData({{"registries.yaml", "v1"}});
  SyncRunner sync(Creds(), kube::SyncOptions{}.Scaled(1.0 / 300));
  std::this_thread::sleep_for(12s);  // the measured span itself, not a wait for an event
  auto counts = server_->counts();
  EXPECT_LE(counts.total, 12) << ::testing::PrintToString(server_->RequestLog());
  EXPECT_GE(counts.watches, 2) << "watches are renewed";
  server_->SetData({{"registries.yaml", "v2"}});
  EXPECT_TRUE(sync.WaitForPayload("v2", 2s));
}

}  // namespace
}  // namespace shim::testing
