// ConfigSources in-process: the local file (edit, rename, SIGHUP, invalid edit) and the
// ConfigMap (merge and atomic write, live change, invalid payload, absent registries, API down
// at start) through the store the daemon serves from, with every log line checked for secrets.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cstdio>
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

const char* kToken = "sources-token-5f2c9a";

std::string LocalConfig(const std::string& extra = "") {
  return "shim: /run/test/shim.sock\n"
         "cri: /run/test/containerd.sock\n"
         "address: https://local.example.com\n"
         "auth: \"local-user:local-secret-pw\"\n"
         "registries:\n"
         "- address: https://local-mirror.example.com\n"
         "reloadInterval: 1h\n" +
         extra;
}

const char* kPayload =
    "version: v1\n"
    "sealos:\n"
    "  address: https://registry.company.com\n"
    "  auth: {username: admin, password: cm-secret-pw-1}\n"
    "debug: true\n";

class ConfigSourcesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pki_dir_ = new TempDir("sources-pki");
    pki_ = new TestPki(MakeTestPki(pki_dir_->path()));
  }
  static void TearDownTestSuite() {
    delete pki_;
    delete pki_dir_;
  }

  void SetUp() override {
    dir_ = std::make_unique<TempDir>("sources");
    path_ = dir_->File("config.yaml");
    server_ = std::make_unique<KubeApiServer>(KubeApiServerOptions{
        .cert_path = pki_->server_cert, .key_path = pki_->server_key, .token = kToken});
    WriteFile(dir_->File("kubeconfig"), MakeKubeconfig(server_->Url(), pki_->ca_pem, kToken));
    capture_ = std::make_shared<LogCapture>();
    logger_ = std::make_shared<spdlog::logger>(
        "test", capture_);
    logger_->set_level(spdlog::level::debug);
    previous_logger_ = spdlog::default_logger();
    spdlog::set_default_logger(logger_);
  }

  void TearDown() override {
    if (sources_) sources_->Stop();
    sources_.reset();
    spdlog::set_default_logger(previous_logger_);
    std::string log = Log();
    for (const char* secret :
         {kToken, "local-secret-pw", "cm-secret-pw-1", "cm-secret-pw-2", "bad-secret-pw"}) {
      EXPECT_EQ(log.find(secret), std::string::npos) << "secret in the log:\n" << log;
    }
  }

  std::string Log() {
    return capture_->Text();
  }

  void StartSources(const std::string& local, bool with_kube = true) {
    WriteFile(path_, local, 0644);
    config::LoadResult loaded = config::LoadConfigFile(path_);
    ASSERT_TRUE(loaded.ok()) << loaded.errors[0];
    store_ = std::make_unique<config::ConfigStore>(loaded.config);
    std::map<std::string, std::string> env;
    if (with_kube) env["KUBECONFIG"] = dir_->File("kubeconfig");
    daemon::ConfigSourcesOptions options{.config_path = path_};
    options.discovery.getenv = [env](const std::string& name) -> std::optional<std::string> {
      auto it = env.find(name);
      if (it == env.end()) return std::nullopt;
      return it->second;
    };
    options.discovery.node_kubeconfigs = {};
    options.kube_time_scale = 0.05;  // backoff 50 ms .. 15 s
    sources_ = std::make_unique<daemon::ConfigSources>(options, *store_);
    sources_->Start();
  }

  config::ConfigPtr Current() const { return store_->Get(); }
  std::string Primary() const { return Current()->registries[0].address; }
  uint64_t Ok(ReloadSource s) const { return sources_->stats().reloads_ok[static_cast<size_t>(s)]; }
  uint64_t Failed(ReloadSource s) const {
    return sources_->stats().reloads_failed[static_cast<size_t>(s)];
  }
  bool WaitForPrimary(const std::string& address, std::chrono::milliseconds timeout = 5s) {
    return WaitUntil([&] { return Primary() == address; }, timeout);
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

TempDir* ConfigSourcesTest::pki_dir_ = nullptr;
TestPki* ConfigSourcesTest::pki_ = nullptr;

TEST_F(ConfigSourcesTest, LocalFileEditRenameSignalAndInvalidEdit) {
  StartSources(LocalConfig(), /*with_kube=*/false);
  ASSERT_TRUE(WaitUntil([&] { return sources_->stats().sync_state == "no-credentials"; }, 5s));

  // Edited in place.
  std::string edited = LocalConfig();
  edited.replace(edited.find("https://local.example.com"), 25, "https://edited.example.com");
  WriteFile(path_, edited);
  ASSERT_TRUE(WaitForPrimary("https://edited.example.com")) << Log();
  EXPECT_EQ(Ok(ReloadSource::kFile), 1u);

  // Replaced by rename, as editors and config management do.
  std::string renamed = LocalConfig("debug: true\n");
  renamed.replace(renamed.find("https://local.example.com"), 25, "https://renamed.example.com");
  WriteFile(dir_->File("config.yaml.new"), renamed);
  ASSERT_EQ(std::rename(dir_->File("config.yaml.new").c_str(), path_.c_str()), 0);
  ASSERT_TRUE(WaitForPrimary("https://renamed.example.com")) << Log();
  EXPECT_TRUE(Current()->debug);

  // An invalid edit is rejected; the running configuration stays whole.
  config::ConfigPtr before = Current();
  WriteFile(path_, LocalConfig("timeout: soon\n"));
  ASSERT_TRUE(WaitUntil([&] { return Failed(ReloadSource::kFile) == 1; }, 5s)) << Log();
  EXPECT_EQ(Current(), before);
  // Quoted values in log lines escape their quotes.
  EXPECT_NE(Log().find("timeout: \\\"soon\\\" is not a duration"), std::string::npos) << Log();

  // SIGHUP re-reads even an unchanged file (here: the invalid one again, rejected again).
  sources_->RequestReload();
  ASSERT_TRUE(WaitUntil([&] { return Failed(ReloadSource::kSignal) == 1; }, 5s)) << Log();
  WriteFile(path_, renamed + "timeout: 2m\n");
  ASSERT_TRUE(WaitUntil([&] { return Ok(ReloadSource::kFile) == 3; }, 5s)) << Log();
  sources_->RequestReload();
  ASSERT_TRUE(WaitUntil([&] { return Ok(ReloadSource::kSignal) == 1; }, 5s)) << Log();
  EXPECT_EQ(Primary(), "https://renamed.example.com");
  EXPECT_TRUE(sources_->stats().last_reload_ok.has_value());
}

TEST_F(ConfigSourcesTest, ShimAndCriChangesWaitForARestart) {
  StartSources(LocalConfig(), false);
  std::string moved = LocalConfig("debug: true\n");
  moved.replace(moved.find("/run/test/shim.sock"), 19, "/run/other/shim.sock");
  WriteFile(path_, moved);
  ASSERT_TRUE(WaitUntil([&] { return Current()->debug; }, 5s)) << Log();
  EXPECT_EQ(Current()->shim_socket, "/run/test/shim.sock");
  EXPECT_NE(Log().find("needs a restart"), std::string::npos);
}

TEST_F(ConfigSourcesTest, ConfigMapAtStartIsMergedAndWrittenWithMode0600) {
  server_->SetData({{"registries.yaml", kPayload}});
  server_->Start();
  StartSources(LocalConfig());
  ASSERT_TRUE(WaitForPrimary("https://registry.company.com")) << Log();
  EXPECT_TRUE(Current()->debug);
  EXPECT_EQ(Current()->registries.size(), 2u) << "local registries kept";
  EXPECT_EQ(Current()->registries[0].auth.password, "cm-secret-pw-1");
  std::string file = ReadFile(path_);
  EXPECT_NE(file.find("registry.company.com"), std::string::npos) << file;
  EXPECT_NE(file.find("local-mirror.example.com"), std::string::npos) << file;
  EXPECT_NE(file.find("/run/test/shim.sock"), std::string::npos) << file;
  struct stat st {};
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(Ok(ReloadSource::kConfigMap), 1u);
  EXPECT_EQ(sources_->stats().sync_state, "synced");
  EXPECT_TRUE(sources_->stats().last_sync_ok.has_value());
  // Our own write is not taken for an edit.
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(Ok(ReloadSource::kFile), 0u);
}

TEST_F(ConfigSourcesTest, ALiveChangeAppliesWithinTwoSeconds) {
  server_->SetData({{"registries.yaml", kPayload}});
  server_->Start();
  StartSources(LocalConfig());
  ASSERT_TRUE(WaitForPrimary("https://registry.company.com")) << Log();
  ASSERT_TRUE(server_->WaitForOpenWatches(1, 5s));
  auto changed_at = std::chrono::steady_clock::now();
  server_->SetData({{"registries.yaml",
                     "sealos: {address: https://second.example.com, auth: {username: u2, "
                     "password: cm-secret-pw-2}}\n"}});
  ASSERT_TRUE(WaitForPrimary("https://second.example.com", 2s)) << Log();
  auto took = std::chrono::steady_clock::now() - changed_at;
  RecordProperty(
      "configmap_change_to_applied_ms",
      static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
  EXPECT_EQ(Current()->registries[0].auth.username, "u2");
  EXPECT_NE(ReadFile(path_).find("second.example.com"), std::string::npos);
}

TEST_F(ConfigSourcesTest, AnInvalidPayloadIsRejectedAndNothingIsWritten) {
  server_->SetData({{"registries.yaml", kPayload}});
  server_->Start();
  StartSources(LocalConfig());
  ASSERT_TRUE(WaitForPrimary("https://registry.company.com")) << Log();
  std::string file_before = ReadFile(path_);
  struct stat before {};
  ASSERT_EQ(stat(path_.c_str(), &before), 0);
  config::ConfigPtr running = Current();

  server_->SetData({{"registries.yaml",
                     "sealos: {address: https://third.example.com, auth: {username: x, password: "
                     "bad-secret-pw}}\nregistries:\n- address: ftp://nope\n"}});
  ASSERT_TRUE(WaitUntil([&] { return Failed(ReloadSource::kConfigMap) == 1; }, 5s)) << Log();
  EXPECT_EQ(Current(), running);
  EXPECT_EQ(ReadFile(path_), file_before);
  struct stat after {};
  ASSERT_EQ(stat(path_.c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino) << "the file was replaced";
  EXPECT_NE(Log().find("registries[0].address"), std::string::npos) << Log();
  EXPECT_NE(Log().find("nothing written"), std::string::npos) << Log();

  // The previous payload stays in force for local edits too.
  // Replaced by rename, as config management does: an in-place rewrite can be read half
  // written while the shim merges (a known race, see the issue notes).
  WriteFile(path_ + ".new", LocalConfig("timeout: 5m\n"));
  ASSERT_EQ(rename((path_ + ".new").c_str(), path_.c_str()), 0);
  ASSERT_TRUE(WaitUntil([&] { return Current()->timeout == 5min; }, 5s)) << Log();
  EXPECT_EQ(Primary(), "https://registry.company.com");
}

TEST_F(ConfigSourcesTest, APayloadWithoutRegistriesKeepsTheLocalOnes) {
  server_->SetData({{"registries.yaml", "sealos: {address: https://registry.company.com}\n"}});
  server_->Start();
  StartSources(LocalConfig());
  ASSERT_TRUE(WaitForPrimary("https://registry.company.com")) << Log();
  ASSERT_EQ(Current()->registries.size(), 2u);
  EXPECT_EQ(Current()->registries[1].address, "https://local-mirror.example.com");
  EXPECT_TRUE(Current()->registries[0].auth.empty()) << "a new primary gets no old password";
}

TEST_F(ConfigSourcesTest, ApiDownAtStartThenUp) {
  StartSources(LocalConfig());
  ASSERT_TRUE(WaitUntil([&] { return sources_->stats().sync_state == "unreachable"; }, 5s))
      << Log();
  EXPECT_EQ(Primary(), "https://local.example.com");
  // Logged once, not on every retry.
  std::this_thread::sleep_for(500ms);
  std::string log = Log();
  size_t first = log.find("ConfigMap sync: unreachable");
  ASSERT_NE(first, std::string::npos) << log;
  EXPECT_EQ(log.find("ConfigMap sync: unreachable", first + 1), std::string::npos) << log;

  server_->SetData({{"registries.yaml", kPayload}});
  server_->Start();
  ASSERT_TRUE(WaitForPrimary("https://registry.company.com", 10s)) << Log();
  EXPECT_EQ(sources_->stats().sync_state, "synced");
}

TEST_F(ConfigSourcesTest, ALocalEditOfAFieldTheConfigMapSetsIsMergedBack) {
  server_->SetData({{"registries.yaml", kPayload}});
  server_->Start();
  StartSources(LocalConfig());
  ASSERT_TRUE(WaitForPrimary("https://registry.company.com")) << Log();
  WriteFile(path_, LocalConfig("timeout: 7m\n"));  // also says address: local.example.com
  ASSERT_TRUE(WaitUntil([&] { return Current()->timeout == 7min; }, 5s)) << Log();
  EXPECT_EQ(Primary(), "https://registry.company.com");
  EXPECT_TRUE(WaitUntil(
      [&] { return ReadFile(path_).find("registry.company.com") != std::string::npos; }, 5s));
}

}  // namespace
}  // namespace shim::testing
