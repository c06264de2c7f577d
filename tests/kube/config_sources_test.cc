// ConfigSources in-process: the local file (edit, rename, SIGHUP, invalid edit) and the
// ConfigMap (merged, never written into the file, kept under stateDir; live change, invalid
// payload, absent registries, promotion of a backup, API down at start, restart with the API
// down, SIGHUP) through the store the daemon serves from, with every log line checked for
// secrets.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
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
    logger_ = std::make_shared<spdlog::logger>("test", capture_);
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

  std::string Log() { return capture_->Text(); }

  void StartSources(const std::string& local, bool with_kube = true) {
    ASSERT_NE(local.find("stateDir: " + StateDir()), std::string::npos)
        << "a test keeps its own state directory, never the machine's";
    WriteFile(path_, local, 0644);
    config::LoadResult loaded = config::LoadConfigFile(path_);
    ASSERT_TRUE(loaded.ok()) << loaded.errors[0];
    store_ = std::make_unique<config::ConfigStore>(loaded.config);
    StartSourcesWith(std::nullopt, with_kube);
  }

  // Starts the sources on the file as it is and the store as it is.
  void StartSourcesWith(const std::optional<config::ConfigMapInput>& initial,
                        bool with_kube = true) {
    std::map<std::string, std::string> env;
    if (with_kube) env["KUBECONFIG"] = dir_->File("kubeconfig");
    daemon::ConfigSourcesOptions options{.config_path = path_, .initial_configmap = initial};
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

  std::string StateDir() const { return dir_->File("state"); }
  std::string SavedState() const { return ReadFileIfExists(StateDir() + "/configmap.yaml"); }

  // The ConfigMap says kPayload; the sources have applied it and kept it in the state directory.
  void StartWithThePayloadKept() {
    server_->SetData({{"registries.yaml", kPayload}});
    server_->Start();
    StartSources(Local());
    ASSERT_TRUE(WaitForPrimary("https://registry.company.com")) << Log();
    ASSERT_TRUE(
        WaitUntil([&] { return SavedState().find("cm-secret-pw-1") != std::string::npos; }, 5s));
  }
  // A local file with the test's own state directory: never the machine's
  // /var/lib/image-cri-shim, whatever the test writes.
  std::string Local(const std::string& extra = "") const {
    return LocalConfig(extra) + "stateDir: " + StateDir() + "\n";
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
  StartSources(Local(), /*with_kube=*/false);
  ASSERT_TRUE(WaitUntil([&] { return sources_->stats().sync_state == "no-credentials"; }, 5s));

  // Edited in place.
  std::string edited = Local();
  edited.replace(edited.find("https://local.example.com"), 25, "https://edited.example.com");
  WriteFile(path_, edited);
  ASSERT_TRUE(WaitForPrimary("https://edited.example.com")) << Log();
  EXPECT_EQ(Ok(ReloadSource::kFile), 1u);

  // Replaced by rename, as editors and config management do.
  std::string renamed = Local("debug: true\n");
  renamed.replace(renamed.find("https://local.example.com"), 25, "https://renamed.example.com");
  WriteFile(dir_->File("config.yaml.new"), renamed);
  ASSERT_EQ(std::rename(dir_->File("config.yaml.new").c_str(), path_.c_str()), 0);
  ASSERT_TRUE(WaitForPrimary("https://renamed.example.com")) << Log();
  EXPECT_TRUE(Current()->debug);

  // An invalid edit is rejected; the running configuration stays whole.
  config::ConfigPtr before = Current();
  WriteFile(path_, Local("timeout: soon\n"));
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
  StartSources(Local(), false);
  std::string moved = Local("debug: true\n");
  moved.replace(moved.find("/run/test/shim.sock"), 19, "/run/other/shim.sock");
  WriteFile(path_, moved);
  ASSERT_TRUE(WaitUntil([&] { return Current()->debug; }, 5s)) << Log();
  EXPECT_EQ(Current()->shim_socket, "/run/test/shim.sock");
  EXPECT_NE(Log().find("needs a restart"), std::string::npos);
}

TEST_F(ConfigSourcesTest, AConfigMapAtStartAppliesTheFileIsLeftAloneAndTheStateIs0600) {
  server_->SetData({{"registries.yaml", kPayload}});
  server_->Start();
  StartSources("# the operator's comment stays\n" + Local());
  std::string file_before = ReadFile(path_);
  struct stat file_stat {};
  ASSERT_EQ(stat(path_.c_str(), &file_stat), 0);
  ASSERT_TRUE(WaitForPrimary("https://registry.company.com")) << Log();
  EXPECT_TRUE(Current()->debug);
  EXPECT_EQ(Current()->registries.size(), 2u) << "local registries kept";
  EXPECT_EQ(Current()->registries[0].auth.password, "cm-secret-pw-1");
  EXPECT_EQ(Ok(ReloadSource::kConfigMap), 1u);
  EXPECT_EQ(sources_->stats().sync_state, "synced");
  EXPECT_TRUE(sources_->stats().last_sync_ok.has_value());

  // The operator's file: byte for byte, same inode, same mode.
  EXPECT_EQ(ReadFile(path_), file_before);
  struct stat after {};
  ASSERT_EQ(stat(path_.c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, file_stat.st_ino);
  EXPECT_EQ(after.st_mode & 07777, 0644u);

  // The ConfigMap is kept under stateDir: directory 0700, file 0600.
  std::string state = StateDir() + "/configmap.yaml";
  ASSERT_TRUE(WaitUntil(
      [&] { return ReadFileIfExists(state).find("cm-secret-pw-1") != std::string::npos; }, 5s))
      << Log();
  struct stat st {};
  ASSERT_EQ(stat(state.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(stat(StateDir().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(Ok(ReloadSource::kFile), 0u) << "nothing was written, so no edit was seen";
}

TEST_F(ConfigSourcesTest, ALiveChangeAppliesWithinTwoSeconds) {
  server_->SetData({{"registries.yaml", kPayload}});
  server_->Start();
  StartSources(Local());
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
  EXPECT_TRUE(WaitUntil(
      [&] {
        return ReadFileIfExists(StateDir() + "/configmap.yaml").find("second.example.com") !=
               std::string::npos;
      },
      5s));
  EXPECT_EQ(ReadFile(path_).find("second.example.com"), std::string::npos);
}

TEST_F(ConfigSourcesTest, AnInvalidPayloadIsRejectedAndAnInPlaceEditStillApplies) {
  StartWithThePayloadKept();
  std::string state_before = ReadFile(StateDir() + "/configmap.yaml");
  config::ConfigPtr running = Current();

  server_->SetData({{"registries.yaml",
                     "sealos: {address: https://third.example.com, auth: {username: x, password: "
                     "bad-secret-pw}}\nregistries:\n- address: ftp://nope\n"}});
  ASSERT_TRUE(WaitUntil([&] { return Failed(ReloadSource::kConfigMap) == 1; }, 5s)) << Log();
  EXPECT_EQ(Current(), running);
  EXPECT_NE(Log().find("registries[0].address"), std::string::npos) << Log();
  EXPECT_NE(Log().find("the last good one stays in force"), std::string::npos) << Log();
  EXPECT_EQ(ReadFile(StateDir() + "/configmap.yaml"), state_before) << "a bad payload is not kept";

  // The good payload stays in force for local edits too; the file is edited in place, which
  // can no longer race with the shim (it never writes the file).
  WriteFile(path_, Local("timeout: 5m\n"));
  ASSERT_TRUE(WaitUntil([&] { return Current()->timeout == 5min; }, 5s)) << Log();
  EXPECT_EQ(Primary(), "https://registry.company.com");
  EXPECT_EQ(Failed(ReloadSource::kConfigMap), 1u) << "the rejected payload is not judged again";
}

TEST_F(ConfigSourcesTest, APayloadWithoutRegistriesKeepsTheLocalOnes) {
  server_->SetData({{"registries.yaml", "sealos: {address: https://registry.company.com}\n"}});
  server_->Start();
  StartSources(Local());
  ASSERT_TRUE(WaitForPrimary("https://registry.company.com")) << Log();
  ASSERT_EQ(Current()->registries.size(), 2u);
  EXPECT_EQ(Current()->registries[1].address, "https://local-mirror.example.com");
  EXPECT_TRUE(Current()->registries[0].auth.empty()) << "a new primary gets no old password";
}

TEST_F(ConfigSourcesTest, ApiDownAtStartThenUp) {
  StartSources(Local());
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

TEST_F(ConfigSourcesTest, AnInPlaceEditDuringAConfigMapChangeIsKeptAndApplied) {
  server_->SetData({{"registries.yaml", kPayload}});
  server_->Start();
  StartSources(Local());
  ASSERT_TRUE(WaitForPrimary("https://registry.company.com")) << Log();
  ASSERT_TRUE(server_->WaitForOpenWatches(1, 5s));
  // The operator edits the file while the ConfigMap changes: both take effect, the edit is
  // never overwritten.
  std::string edited = Local("timeout: 7m\n# edited by hand\n");
  WriteFile(path_, edited);
  server_->SetData({{"registries.yaml", std::string(kPayload) + "fallbackToOrigin: true\n"}});
  ASSERT_TRUE(
      WaitUntil([&] { return Current()->timeout == 7min && Current()->fallback_to_origin; }, 5s))
      << Log();
  EXPECT_EQ(Primary(), "https://registry.company.com");
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(ReadFile(path_), edited);
}

TEST_F(ConfigSourcesTest, AConfigMapThatPromotesTheFilesBackupIsAppliedWithItsCredentials) {
  // The file: primary local.example.com, backup local-mirror.example.com with credentials. The
  // ConfigMap promotes the backup (the documented `sealos.address` shape, no auth).
  std::string local =
      "shim: /run/test/shim.sock\ncri: /run/test/containerd.sock\n"
      "address: https://local.example.com\nauth: \"local-user:local-secret-pw\"\n"
      "registries:\n- address: https://local-mirror.example.com\n"
      "  auth: \"mirror-user:local-secret-pw\"\nreloadInterval: 1h\nstateDir: " +
      StateDir() + "\n";
  server_->SetData({{"registries.yaml", "sealos:\n  address: https://local-mirror.example.com\n"}});
  server_->Start();
  StartSources(local);
  ASSERT_TRUE(WaitForPrimary("https://local-mirror.example.com")) << Log();
  ASSERT_EQ(Current()->registries.size(), 1u) << "listed once, at its first position";
  EXPECT_EQ(Current()->registries[0].auth.username, "mirror-user");
  EXPECT_EQ(Failed(ReloadSource::kConfigMap), 0u) << Log();
  EXPECT_EQ(Log().find("list each registry once"), std::string::npos) << Log();
}

TEST_F(ConfigSourcesTest, ARestartWithTheApiServerDownServesTheLastSyncedConfigMap) {
  StartWithThePayloadKept();
  sources_->Stop();
  sources_.reset();
  server_->Stop();

  // The daemon starts again: the file and the saved ConfigMap, before any API answer.
  daemon::StartupConfig startup = daemon::ResolveAtStart(path_);
  ASSERT_TRUE(startup.resolved.ok()) << startup.resolved.errors[0];
  ASSERT_TRUE(startup.configmap.has_value());
  EXPECT_EQ(startup.resolved.config->registries[0].address, "https://registry.company.com");
  EXPECT_EQ(startup.resolved.config->registries[0].auth.password, "cm-secret-pw-1");
  EXPECT_EQ(startup.resolved.origins.at("address"), "ConfigMap");

  // And keeps serving it while the API server cannot be reached.
  store_ = std::make_unique<config::ConfigStore>(startup.resolved.config);
  StartSourcesWith(startup.configmap);
  ASSERT_TRUE(WaitUntil([&] { return sources_->stats().sync_state == "unreachable"; }, 5s))
      << Log();
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(Primary(), "https://registry.company.com");
  EXPECT_TRUE(Current()->debug);

  // A deleted ConfigMap stops applying, and is no longer kept.
  server_->Start();
  server_->Delete();
  ASSERT_TRUE(WaitForPrimary("https://local.example.com", 10s)) << Log();
  EXPECT_TRUE(
      WaitUntil([&] { return !std::filesystem::exists(StateDir() + "/configmap.yaml"); }, 5s));
}

TEST_F(ConfigSourcesTest, SighupReadsTheConfigMapAgain) {
  server_->SetData({{"registries.yaml", kPayload}});
  server_->Start();
  StartSources(Local());
  ASSERT_TRUE(WaitForPrimary("https://registry.company.com")) << Log();
  ASSERT_TRUE(server_->WaitForOpenWatches(1, 5s));
  int gets = server_->counts().gets;
  sources_->RequestReload();
  ASSERT_TRUE(WaitUntil([&] { return server_->counts().gets == gets + 1; }, 5s)) << Log();
  EXPECT_TRUE(server_->WaitForOpenWatches(1, 5s));
  EXPECT_NE(Log().find("re-reading the configuration file, the ConfigMap"), std::string::npos);
  EXPECT_EQ(Primary(), "https://registry.company.com");
}

}  // namespace
}  // namespace shim::testing
