// Credentials from a dockerconfigjson Secret through ConfigSources, against the Kubernetes API
// test server: read at start and kept 0600 under stateDir (the file is never written), a rotation
// applied within two seconds, absent / forbidden / wrong type rejected while the running
// configuration serves, 410 relisted without losing a rotation, the Secret's watch on the same
// thread next to the ConfigMap's, and the cost in requests. Every log line is checked for secrets.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <iostream>
#include <map>
#include <sstream>

#include "config/loader.h"
#include "config/store.h"
#include "daemon/config_sources.h"
#include "kube_api_server.h"
#include "log_capture.h"
#include "temp_dir.h"
#include "test_util.h"

namespace shim::testing {
namespace {

using namespace std::chrono_literals;
using daemon::ReloadSource;

const char* kToken = "secret-sync-token-0e5d";
const char* kPw1 = "sec-pw-ONE-4t7u";
const char* kPw2 = "sec-pw-TWO-8k2w";
const char* kLocalPw = "local-pw-9x1c";
const char* kType = "kubernetes.io/dockerconfigjson";

std::string DockerConfig(const std::string& host, const std::string& user, const std::string& pw) {
  return R"({"auths":{")" + host + R"(":{"username":")" + user + R"(","password":")" + pw +
         R"(","auth":")" + Base64(user + ":" + pw) + R"("}}})";
}
std::map<std::string, std::string> SecretData(const std::string& host, const std::string& user,
                                              const std::string& pw) {
  return {{".dockerconfigjson", DockerConfig(host, user, pw)}};
}

const char* kPayload =
    "version: v1\n"
    "sealos:\n"
    "  address: https://registry.company.com\n"
    "  authSecret: regcred\n"
    "debug: true\n";

class SecretSync : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pki_dir_ = new TempDir("secret-pki");
    pki_ = new TestPki(MakeTestPki(pki_dir_->path()));
  }
  static void TearDownTestSuite() {
    delete pki_;
    delete pki_dir_;
  }

  void SetUp() override {
    dir_ = std::make_unique<TempDir>("secret-sync");
    path_ = dir_->File("config.yaml");
    server_ = std::make_unique<KubeApiServer>(KubeApiServerOptions{
        .cert_path = pki_->server_cert, .key_path = pki_->server_key, .token = kToken});
    WriteFile(dir_->File("kubeconfig"), MakeKubeconfig(server_->Url(), pki_->ca_pem, kToken));
    capture_ = std::make_shared<LogCapture>();
    logger_ = std::make_shared<spdlog::logger>("test", capture_);
    logger_->set_level(spdlog::level::debug);  // debug lines must not leak either
    previous_logger_ = spdlog::default_logger();
    spdlog::set_default_logger(logger_);
  }

  void TearDown() override {
    if (sources_) sources_->Stop();
    sources_.reset();
    server_.reset();
    spdlog::set_default_logger(previous_logger_);
    std::string log = Log();
    for (const std::string& secret :
         {std::string(kToken), std::string(kPw1), std::string(kPw2), std::string(kLocalPw),
          Base64(std::string("admin:") + kPw1), Base64(std::string("admin:") + kPw2),
          Base64(DockerConfig("registry.company.com", "admin", kPw1))}) {
      EXPECT_EQ(log.find(secret), std::string::npos)
          << "a secret (" << secret.substr(0, 6) << "...) is in the log:\n"
          << log;
    }
  }

  std::string Log() { return capture_->Text(); }
  size_t LogCount(const std::string& text) {
    std::string log = Log();
    size_t n = 0;
    for (size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
    return n;
  }

  // The test's own state directory (never the machine's) and the file the shim keeps there.
  std::string StateFile() const { return dir_->File("state"); }
  std::string SavedState() const { return ReadFileIfExists(dir_->File("state/configmap.yaml")); }

  void StartSources(double time_scale = 0.05) {
    WriteFile(path_,
              "shim: /run/test/shim.sock\ncri: /run/test/containerd.sock\n"
              "address: https://local.example.com\nauth: \"local:" +
                  std::string(kLocalPw) + "\"\nreloadInterval: 1h\nstateDir: " + StateFile() + "\n",
              0644);
    config::LoadResult loaded = config::LoadConfigFile(path_);
    ASSERT_TRUE(loaded.ok()) << loaded.errors[0];
    store_ = std::make_unique<config::ConfigStore>(loaded.config);
    std::string kubeconfig = dir_->File("kubeconfig");
    daemon::ConfigSourcesOptions options{.config_path = path_};
    options.discovery.getenv = [kubeconfig](const std::string& name) -> std::optional<std::string> {
      if (name == "KUBECONFIG") return kubeconfig;
      return std::nullopt;
    };
    options.discovery.node_kubeconfigs = {};
    options.kube_time_scale = time_scale;  // 0.05: watches of 30 s, backoff 50 ms .. 15 s
    sources_ = std::make_unique<daemon::ConfigSources>(options, *store_);
    sources_->Start();
  }

  config::ConfigPtr Current() const { return store_->Get(); }
  std::string Primary() const { return Current()->registries[0].address; }
  std::string Password() const { return Current()->registries[0].auth.password; }
  uint64_t Ok(ReloadSource s) const { return sources_->stats().reloads_ok[static_cast<size_t>(s)]; }
  uint64_t Failed(ReloadSource s) const {
    return sources_->stats().reloads_failed[static_cast<size_t>(s)];
  }
  std::string SecretState(const std::string& name) const {
    auto states = sources_->stats().secret_states;
    auto it = states.find(name);
    return it == states.end() ? "" : it->second;
  }

  static TempDir* pki_dir_;
  static TestPki* pki_;
  std::unique_ptr<TempDir> dir_;
  std::string path_;
  std::unique_ptr<KubeApiServer> server_;
  std::unique_ptr<config::ConfigStore> store_;
  std::unique_ptr<daemon::ConfigSources> sources_;
  std::shared_ptr<LogCapture> capture_;
  std::shared_ptr<spdlog::logger> logger_;
  std::shared_ptr<spdlog::logger> previous_logger_;
};

TempDir* SecretSync::pki_dir_ = nullptr;
TestPki* SecretSync::pki_ = nullptr;

TEST_F(SecretSync, TheSecretSuppliesTheCredentialsAndARotationAppliesWithinTwoSeconds) {
  server_->SetSecret("regcred", kType, SecretData("registry.company.com", "admin", kPw1));
  server_->SetData({{"registries.yaml", kPayload}});
  server_->Start();
  StartSources();
  ASSERT_TRUE(WaitUntil([&] { return Password() == kPw1; }, 5s)) << Log();
  EXPECT_EQ(Primary(), "https://registry.company.com");
  EXPECT_EQ(Current()->registries[0].auth.username, "admin");
  EXPECT_EQ(Ok(ReloadSource::kConfigMap), 1u) << "applied once, after the Secret answered";
  EXPECT_EQ(Failed(ReloadSource::kConfigMap), 0u) << "no rejection while the Secret was read";
  // The node keeps what the Secret said under stateDir, mode 0600, for a restart without the
  // API server; the operator's file is never written.
  EXPECT_TRUE(WaitUntil([&] { return SavedState().find(kPw1) != std::string::npos; }, 2s));
  EXPECT_EQ(ReadFile(path_).find(kPw1), std::string::npos);
  struct stat st {};
  ASSERT_EQ(stat(dir_->File("state/configmap.yaml").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);

  // Both watches open at once, on the sources' one thread.
  ASSERT_TRUE(server_->WaitForOpenWatches(2, 5s)) << Log();
  EXPECT_EQ(SecretState("regcred"), "synced");
  auto rotated_at = std::chrono::steady_clock::now();
  server_->SetSecret("regcred", kType, SecretData("registry.company.com", "admin", kPw2));
  ASSERT_TRUE(WaitUntil([&] { return Password() == kPw2; }, 2s)) << Log();
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - rotated_at);
  RecordProperty("secret_rotation_to_applied_ms", static_cast<int>(took.count()));
  EXPECT_TRUE(WaitUntil([&] { return SavedState().find(kPw2) != std::string::npos; }, 2s));
  // The ConfigMap watch is not disturbed by the Secret's events.
  server_->SetData({{"registries.yaml", std::string(kPayload) + "timeout: 3m\n"}});
  ASSERT_TRUE(WaitUntil([&] { return Current()->timeout == 3min; }, 2s)) << Log();
  EXPECT_EQ(Password(), kPw2);
  auto counts = server_->counts();
  EXPECT_EQ(counts.gets, 1);
  EXPECT_EQ(counts.secret_gets, 1);
  EXPECT_EQ(counts.secret_watches, 1) << ::testing::PrintToString(server_->RequestLog());

  // A ConfigMap that stops naming the Secret: its watch ends (on the client's side: the test
  // server notices a closed stream only when it next writes to it).
  server_->SetData({{"registries.yaml",
                     "sealos: {address: https://registry.company.com, auth: {username: admin, "
                     "password: " +
                         std::string(kPw1) + "}}\n"}});
  ASSERT_TRUE(WaitUntil([&] { return Password() == kPw1; }, 2s)) << Log();
  EXPECT_TRUE(WaitUntil([&] { return sources_->stats().secret_states.empty(); }, 2s)) << Log();
  EXPECT_NE(Log().find("not watched any more secret=kube-system/regcred"), std::string::npos);
  uint64_t reloads = Ok(ReloadSource::kConfigMap);
  server_->SetSecret("regcred", kType, SecretData("registry.company.com", "admin", kPw2));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(Ok(ReloadSource::kConfigMap), reloads);
  EXPECT_EQ(Password(), kPw1);
}

TEST_F(SecretSync, AnAbsentSecretKeepsTheRunningConfigurationUntilItIsCreated) {
  server_->SetData({{"registries.yaml", kPayload}});
  server_->Start();
  StartSources();
  ASSERT_TRUE(WaitUntil([&] { return Failed(ReloadSource::kConfigMap) == 1; }, 5s)) << Log();
  EXPECT_EQ(Primary(), "https://local.example.com") << "the local configuration serves";
  EXPECT_EQ(Password(), kLocalPw);
  EXPECT_NE(Log().find("Secret kube-system/regcred does not exist"), std::string::npos) << Log();
  EXPECT_EQ(SecretState("regcred"), "secret-absent");
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(Failed(ReloadSource::kConfigMap), 1u) << "rejected once, not on every retry";
  EXPECT_EQ(LogCount("Secret sync: Secret absent"), 1u) << Log();

  server_->SetSecret("regcred", kType, SecretData("registry.company.com", "admin", kPw1));
  ASSERT_TRUE(WaitUntil([&] { return Password() == kPw1; }, 2s)) << Log();
  EXPECT_EQ(server_->counts().secret_gets, 1) << "created: it arrived through the watch";
}

TEST_F(SecretSync, ForbiddenThenGrantedAndNoEntryForTheHost) {
  server_->ForbidSecret("regcred");
  server_->SetSecret("regcred", kType, SecretData("registry.company.com", "admin", kPw1));
  server_->SetData({{"registries.yaml", kPayload}});
  server_->Start();
  StartSources();
  ASSERT_TRUE(WaitUntil([&] { return Failed(ReloadSource::kConfigMap) == 1; }, 5s)) << Log();
  EXPECT_EQ(Password(), kLocalPw);
  EXPECT_EQ(SecretState("regcred"), "unauthorized");
  EXPECT_NE(Log().find("secrets \"regcred\" is forbidden"), std::string::npos) << Log();
  std::this_thread::sleep_for(700ms);  // several retries with backoff
  EXPECT_GE(server_->counts().unauthorized, 3) << "retried";
  EXPECT_EQ(Failed(ReloadSource::kConfigMap), 1u) << "rejected once";
  EXPECT_EQ(LogCount("Secret sync: unauthorized"), 1u) << "the state change is logged once";

  server_->ForbidSecret("regcred", false);  // the Role is fixed (deploy/rbac.yaml)
  ASSERT_TRUE(WaitUntil([&] { return Password() == kPw1; }, 10s)) << Log();

  // The Secret loses the entry for the host: rejected, the last good credentials serve.
  server_->SetSecret("regcred", kType, SecretData("other.company.com", "admin", kPw2));
  ASSERT_TRUE(WaitUntil([&] { return Failed(ReloadSource::kConfigMap) == 2; }, 2s)) << Log();
  EXPECT_EQ(Password(), kPw1);
  EXPECT_NE(Log().find("has no entry for registry.company.com"), std::string::npos) << Log();
  // A wrong type: the same.
  server_->SetSecret("regcred", "Opaque", {{"password", kPw2}});
  ASSERT_TRUE(WaitUntil([&] { return Failed(ReloadSource::kConfigMap) == 3; }, 2s)) << Log();
  EXPECT_EQ(Password(), kPw1);
  // Deleted: the same; the running configuration keeps the last good credentials.
  server_->DeleteSecret("regcred");
  ASSERT_TRUE(WaitUntil([&] { return Failed(ReloadSource::kConfigMap) == 4; }, 2s)) << Log();
  EXPECT_EQ(Password(), kPw1);
  // And a local edit meanwhile still merges with the payload and Secret in force.
  WriteFile(path_, ReadFile(path_) + "timeout: 4m\n");
  ASSERT_TRUE(WaitUntil([&] { return Current()->timeout == 4min; }, 5s)) << Log();
  EXPECT_EQ(Password(), kPw1);
  EXPECT_EQ(Primary(), "https://registry.company.com");
}

TEST_F(SecretSync, ARotationReachesThePayloadInForceWhileANewerOneIsRejected) {
  server_->SetSecret("regcred", kType, SecretData("registry.company.com", "admin", kPw1));
  server_->SetData({{"registries.yaml", kPayload}});
  server_->Start();
  StartSources();
  ASSERT_TRUE(WaitUntil([&] { return Password() == kPw1; }, 5s)) << Log();
  // A newer payload that no longer names the Secret, and is invalid: rejected.
  server_->SetData({{"registries.yaml",
                     "sealos: {address: https://registry.company.com}\n"
                     "registries:\n- address: ftp://nope\n"}});
  ASSERT_TRUE(WaitUntil([&] { return Failed(ReloadSource::kConfigMap) == 1; }, 5s)) << Log();
  // The Secret of the payload in force is still watched: its rotation applies.
  server_->SetSecret("regcred", kType, SecretData("registry.company.com", "admin", kPw2));
  ASSERT_TRUE(WaitUntil([&] { return Password() == kPw2; }, 2s)) << Log();
  EXPECT_TRUE(Current()->debug) << "still the payload in force";
  EXPECT_TRUE(WaitUntil([&] { return SavedState().find(kPw2) != std::string::npos; }, 2s));
}

TEST_F(SecretSync, GoneMeansListAgainWithoutLosingARotation) {
  server_->SetSecret("regcred", kType, SecretData("registry.company.com", "admin", kPw1));
  server_->SetData({{"registries.yaml", kPayload}});
  server_->Start();
  StartSources();
  ASSERT_TRUE(WaitUntil([&] { return Password() == kPw1; }, 5s)) << Log();
  ASSERT_TRUE(server_->WaitForOpenWatches(2, 5s));
  server_->Stop();
  server_->SetSecret("regcred", kType, SecretData("registry.company.com", "admin", kPw2));
  server_->Compact();
  server_->Start();
  ASSERT_TRUE(WaitUntil([&] { return Password() == kPw2; }, 10s)) << Log();
  EXPECT_EQ(server_->counts().secret_gets, 2) << ::testing::PrintToString(server_->RequestLog());
  // A dropped stream resumes from the resourceVersion (no third read).
  ASSERT_TRUE(server_->WaitForOpenWatches(2, 5s));
  server_->DropWatches();
  server_->SetSecret("regcred", kType, SecretData("registry.company.com", "admin", kPw1));
  ASSERT_TRUE(WaitUntil([&] { return Password() == kPw1; }, 5s)) << Log();
  EXPECT_EQ(server_->counts().secret_gets, 2);
}

TEST_F(SecretSync, AScaledHourWithTheSecretCostsAboutTwelveRequests) {
  // 600 s watches scaled by 1/300: an hour is 12 s. The ConfigMap and the Secret each renew
  // their watch about 6 times an hour, after one read each at start.
  server_->SetSecret("regcred", kType, SecretData("registry.company.com", "admin", kPw1));
  server_->SetData({{"registries.yaml", kPayload}});
  server_->Start();
  StartSources(1.0 / 300);
  ASSERT_TRUE(server_->WaitForRequests(1, 5s));
  std::this_thread::sleep_for(12s);  // the measured span itself, not a wait for an event
  auto counts = server_->counts();
  int total = counts.total;
  std::cout << "API requests in a scaled hour, ConfigMap + one Secret: " << total << " (ConfigMap "
            << counts.gets << " get + " << counts.watches << " watches, Secret "
            << counts.secret_gets << " get + " << counts.secret_watches << " watches)\n";
  RecordProperty("requests_per_scaled_hour", total);
  EXPECT_LE(total, 16) << ::testing::PrintToString(server_->RequestLog());
  EXPECT_LE(counts.secret_gets + counts.secret_watches, 8);
  EXPECT_GE(counts.secret_watches, 2) << "watches are renewed";
  EXPECT_EQ(Password(), kPw1);
  server_->SetSecret("regcred", kType, SecretData("registry.company.com", "admin", kPw2));
  EXPECT_TRUE(WaitUntil([&] { return Password() == kPw2; }, 2s)) << Log();
}

}  // namespace
}  // namespace shim::testing
