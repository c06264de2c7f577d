// End-to-end tests of dynamic configuration: the built shim between a CRI client (playing
// kubelet) and a real containerd, two real TLS registries with different credentials, and the
// Kubernetes API test server (tests/kube) holding kube-system/image-cri-shim. The shim finds the
// API through a kubeconfig in $KUBECONFIG, as on a node. Which registry a pull came from is told
// by the image id (each registry holds an image built for it). Runs under sandbox.sh
// (ctest e2e_config); every process is started and stopped by the test that needs it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "containerd.h"
#include "cri_client.h"
#include "kube_api_server.h"
#include "registry.h"
#include "shim_process.h"
#include "temp_dir.h"
#include "test_image.h"
#include "test_util.h"

namespace shim::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr char kUserA[] = "cfg-user-a";
constexpr char kPasswordA[] = "cfg-pw-A-83jd";
constexpr char kUserB[] = "cfg-user-b";
constexpr char kPasswordB[] = "cfg-pw-B-19xk";
constexpr char kToken[] = "e2e-kube-token-7c1d0e";
constexpr char kImage[] = "docker.io/team/app:1";       // on both registries
constexpr char kOnlyOnB[] = "docker.io/team/only-b:1";  // on registry B only

const CallOptions kPull{.timeout = std::chrono::seconds(60)};

class ConfigE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    try {
      a_ = new Registry(
          {.host_name = "registry-a.test", .username = kUserA, .password = kPasswordA});
      b_ = new Registry(
          {.host_name = "registry-b.test", .username = kUserB, .password = kPasswordB});
      id_a_ = PushImage(*a_, "team/app:1").image_id;
      id_b_ = PushImage(*b_, "team/app:1").image_id;
      PushImage(*b_, "team/only-b:1");
      containerd_ = new Containerd();
      pki_dir_ = new TempDir("kube-pki");
      pki_ = new TestPki(MakeTestPki(pki_dir_->path()));
    } catch (const std::exception& e) {
      setup_error_ = e.what();
    }
  }
  static void TearDownTestSuite() {
    delete containerd_;
    delete a_;
    delete b_;
    delete pki_;
    delete pki_dir_;
  }

  void SetUp() override {
    if (!setup_error_.empty()) GTEST_FAIL() << "harness setup failed: " << setup_error_;
    dir_ = std::make_unique<TempDir>("cfg");
    path_ = dir_->File("config.yaml");
    api_ = std::make_unique<KubeApiServer>(KubeApiServerOptions{
        .cert_path = pki_->server_cert, .key_path = pki_->server_key, .token = kToken});
    WriteFile(dir_->File("kubeconfig"), MakeKubeconfig(api_->Url(), pki_->ca_pem, kToken), 0600);
  }

  void TearDown() override {
    if (!shim_) return;
    shim_->Stop();
    std::string log = shim_->Log();
    for (const std::string& secret :
         {std::string(kPasswordA), std::string(kPasswordB), std::string(kToken),
          Base64(std::string(kUserA) + ":" + kPasswordA),
          Base64(std::string(kUserB) + ":" + kPasswordB)}) {
      EXPECT_EQ(log.find(secret), std::string::npos)
          << "a secret (" << secret.substr(0, 5) << "...) is in the shim's log";
    }
  }

  static std::string Sealos(const Registry& r, const std::string& user, const std::string& pw) {
    return "version: v1\nsealos:\n  address: " + r.Address() + "\n  auth: {username: " + user +
           ", password: \"" + pw + "\"}\n";
  }
  static std::string SealosA() { return Sealos(*a_, kUserA, kPasswordA); }
  static std::string SealosB() { return Sealos(*b_, kUserB, kPasswordB); }

  std::string LocalConfig(const std::string& extra = "") const {
    return "shim: " + dir_->File("shim.sock") + "\ncri: " + containerd_->Socket() +
           "\naddress: " + a_->Address() + "\nauth: \"" + kUserA + ":" + kPasswordA +
           "\"\nreloadInterval: 1h\nstateDir: " + StateDir() + "\n" + extra;
  }
  std::string StateDir() const { return dir_->File("state"); }

  void StartShim(const std::string& local, const std::string& time_scale = "0.05") {
    WriteFile(path_, local, 0644);
    LaunchShim(time_scale);
  }

  // Starts the shim on the file as it is (a restart keeps what the last one left).
  void LaunchShim(const std::string& time_scale) {
    shim_ = std::make_unique<ShimProcess>(
        ShimOptions{.config_path = path_,
                    .socket_path = dir_->File("shim.sock"),
                    .debug = true,  // debug lines must not leak secrets either
                    .env = {{"KUBECONFIG", dir_->File("kubeconfig")},
                            {"HOME", dir_->path()},
                            {"SHIM_KUBE_TIME_SCALE", time_scale}}});
    shim_->Start();
    client_ = std::make_unique<CriClient>(shim_->Socket());
  }

  // The image id a pull through the shim got, or "error: ..." when it failed.
  std::string Pull(const std::string& image = kImage) {
    std::string ref;
    grpc::Status status = client_->PullImage(image, nullptr, &ref, kPull);
    if (!status.ok()) return "error: " + status.error_message();
    return ref;
  }

  // Pulls until one gives `id`; the time it took, or nullopt after `timeout`.
  std::optional<std::chrono::milliseconds> PullUntil(const std::string& id,
                                                     std::chrono::milliseconds timeout,
                                                     const std::string& image = kImage) {
    auto start = Clock::now();
    std::string last;
    while (Clock::now() - start < timeout) {
      last = Pull(image);
      if (last == id) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
      }
      std::this_thread::sleep_for(50ms);
    }
    ADD_FAILURE() << "last pull: " << last;
    return std::nullopt;
  }

  bool LogHas(const std::string& text, std::chrono::milliseconds timeout = 10s) {
    return WaitUntil([&] { return shim_->Log().find(text) != std::string::npos; }, timeout);
  }

  static Registry* a_;
  static Registry* b_;
  static std::string id_a_;
  static std::string id_b_;
  static Containerd* containerd_;
  static TempDir* pki_dir_;
  static TestPki* pki_;
  static std::string setup_error_;
  std::unique_ptr<TempDir> dir_;
  std::string path_;
  std::unique_ptr<KubeApiServer> api_;
  std::unique_ptr<ShimProcess> shim_;
  std::unique_ptr<CriClient> client_;
};

Registry* ConfigE2E::a_ = nullptr;
Registry* ConfigE2E::b_ = nullptr;
std::string ConfigE2E::id_a_;
std::string ConfigE2E::id_b_;
Containerd* ConfigE2E::containerd_ = nullptr;
TempDir* ConfigE2E::pki_dir_ = nullptr;
TestPki* ConfigE2E::pki_ = nullptr;
std::string ConfigE2E::setup_error_;

TEST_F(ConfigE2E, AConfigMapAtStartServesPullsAndTheOperatorsFileIsUntouched) {
  ASSERT_NE(id_a_, id_b_);
  api_->SetData({{"registries.yaml", SealosB()}});
  api_->Start();
  std::string local = "# node file: comments stay\n" + LocalConfig() + "# the end\n";
  StartShim(local);
  ASSERT_TRUE(PullUntil(id_b_, 10s)) << shim_->Log();
  // Byte for byte, comments included, with its own mode.
  EXPECT_EQ(ReadFile(path_), local);
  struct stat st {};
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  // The ConfigMap is kept for restarts under stateDir, 0600 in a 0700 directory.
  std::string state = StateDir() + "/configmap.yaml";
  ASSERT_TRUE(
      WaitUntil([&] { return ReadFileIfExists(state).find(b_->Host()) != std::string::npos; }, 5s))
      << shim_->Log();
  ASSERT_EQ(stat(state.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(stat(StateDir().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
}

// prePull from the ConfigMap (a cluster-wide list by kubectl): pulled at start through the
// ConfigMap's registry, and a change of the list pulls what it adds, without any caller.
TEST_F(ConfigE2E, APrePullListFromTheConfigMapIsPulledAndAChangePullsWhatItAdds) {
  std::string registries_b = "registries:\n- address: " + b_->Address() +
                             "\n  auth: {username: " + kUserB + ", password: \"" + kPasswordB +
                             "\"}\n";
  CriClient direct(containerd_->Socket());
  // Earlier tests pulled these: prePull would find them present.
  ASSERT_TRUE(direct.RemoveImage(kImage, {.timeout = 20s}).ok());
  ASSERT_TRUE(direct.RemoveImage(kOnlyOnB, {.timeout = 20s}).ok());
  api_->SetData({{"registries.yaml", SealosA() + registries_b + "prePull: [team/app:1]\n"}});
  api_->Start();
  StartShim(LocalConfig());
  auto held = [&](const std::string& name, const std::string& id) {
    cri::ImageStatusResponse status;
    return direct.ImageStatus(name, &status, {.timeout = 20s}).ok() && status.image().id() == id;
  };
  ASSERT_TRUE(WaitUntil([&] { return held(kImage, id_a_); }, 30s)) << shim_->Log();
  const std::string id_only_b = BuildTestImage(b_->host_name()).image_id;
  EXPECT_FALSE(held(kOnlyOnB, id_only_b));
  api_->SetData(
      {{"registries.yaml", SealosA() + registries_b + "prePull: [team/app:1, team/only-b:1]\n"}});
  EXPECT_TRUE(WaitUntil([&] { return held(kOnlyOnB, id_only_b); }, 30s)) << shim_->Log();
  EXPECT_TRUE(LogHas("prePull docker.io/team/only-b:1: pulled")) << shim_->Log();
  EXPECT_TRUE(direct.RemoveImage(kImage, {.timeout = 20s}).ok());
  EXPECT_TRUE(direct.RemoveImage(kOnlyOnB, {.timeout = 20s}).ok());
}

TEST_F(ConfigE2E, AConfigMapThatPromotesTheBackupServesPullsFromIt) {
  // The node's file: primary A, backup B with its credentials. The ConfigMap promotes B in the
  // documented shape, without repeating B's credentials.
  api_->SetData({{"registries.yaml", "sealos:\n  address: " + b_->Address() + "\n"}});
  api_->Start();
  StartShim(LocalConfig("registries:\n- address: " + b_->Address() + "\n  auth: \"" + kUserB + ":" +
                        kPasswordB + "\"\n"));
  ASSERT_TRUE(PullUntil(id_b_, 10s)) << shim_->Log();
  EXPECT_FALSE(LogHas("list each registry once", 0ms)) << shim_->Log();
  EXPECT_FALSE(LogHas("ConfigMap payload rejected", 0ms)) << shim_->Log();
}

TEST_F(ConfigE2E, ARestartWithTheApiServerDownServesTheLastSyncedConfigMap) {
  api_->SetData({{"registries.yaml", SealosB()}});
  api_->Start();
  StartShim(LocalConfig());
  ASSERT_TRUE(PullUntil(id_b_, 10s)) << shim_->Log();
  ASSERT_TRUE(WaitUntil(
      [&] {
        return ReadFileIfExists(StateDir() + "/configmap.yaml").find(b_->Host()) !=
               std::string::npos;
      },
      5s));
  shim_->Stop();
  api_->Stop();
  // Restarted while the API server is down: the first pull already goes to B.
  std::string file = ReadFile(path_);
  LaunchShim("0.05");
  EXPECT_EQ(Pull(), id_b_) << shim_->Log();
  EXPECT_TRUE(LogHas("serving the last synced ConfigMap from the state directory")) << shim_->Log();
  EXPECT_TRUE(LogHas("ConfigMap sync: unreachable")) << shim_->Log();
  EXPECT_EQ(Pull(), id_b_);
  EXPECT_EQ(ReadFile(path_), file);
}

TEST_F(ConfigE2E, AnInPlaceEditDuringAConfigMapChangeIsKeptAndApplied) {
  api_->SetData({{"registries.yaml", SealosA()}});
  api_->Start();
  StartShim(LocalConfig());
  ASSERT_EQ(Pull(), id_a_);
  ASSERT_TRUE(api_->WaitForOpenWatches(1, 10s));
  // The operator edits the file in place while the ConfigMap moves the node to B.
  std::string edited = LocalConfig("# edited by hand\ntimeout: 7m\n");
  WriteFile(path_, edited);
  api_->SetData({{"registries.yaml", SealosB()}});
  ASSERT_TRUE(PullUntil(id_b_, 5s)) << shim_->Log();
  EXPECT_TRUE(LogHas("config reloaded source=file")) << shim_->Log();
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(ReadFile(path_), edited);
}

TEST_F(ConfigE2E, AChangedConfigMapReachesNewPullsWithinTwoSeconds) {
  api_->SetData({{"registries.yaml", SealosA()}});
  api_->Start();
  StartShim(LocalConfig());
  ASSERT_EQ(Pull(), id_a_);
  ASSERT_TRUE(api_->WaitForOpenWatches(1, 10s));

  // A new registry and its credentials.
  api_->SetData({{"registries.yaml", SealosB()}});
  auto took = PullUntil(id_b_, 2s);
  ASSERT_TRUE(took) << shim_->Log();
  RecordProperty("new_registry_ms", static_cast<int>(took->count()));

  // New credentials for the same registry: a wrong password is used at once...
  api_->SetData({{"registries.yaml", Sealos(*b_, kUserB, "wrong-password")}});
  auto start = Clock::now();
  bool refused = WaitUntil([&] { return Pull().find("401") != std::string::npos; }, 2s, 50ms);
  EXPECT_TRUE(refused) << shim_->Log();
  // ...and so is the right one.
  api_->SetData({{"registries.yaml", SealosB()}});
  took = PullUntil(id_b_, 2s);
  ASSERT_TRUE(took) << shim_->Log();
  RecordProperty("new_credentials_ms", static_cast<int>(took->count()));
  std::cout << "ConfigMap change to a pull that uses it: new registry and credentials within "
            << took->count() << " ms; 401 with a wrong password after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count()
            << " ms in all\n";
  EXPECT_EQ(api_->counts().gets, 1) << "one read, then the watch";
}

TEST_F(ConfigE2E, AConfigMapWithoutRegistriesKeepsTheLocalOnes) {
  api_->SetData({{"registries.yaml", SealosA() + "debug: true\n"}});
  api_->Start();
  StartShim(LocalConfig("registries:\n- address: " + b_->Address() + "\n  auth: \"" + kUserB + ":" +
                        kPasswordB + "\"\n"));
  ASSERT_TRUE(LogHas("source=configmap")) << shim_->Log();
  EXPECT_NE(ReadFile(path_).find(b_->Host()), std::string::npos) << ReadFile(path_).size();
  // Only B has it: the pull reaches B through the kept local list.
  EXPECT_EQ(Pull(kOnlyOnB).rfind("sha256:", 0), 0u) << shim_->Log();
}

TEST_F(ConfigE2E, AnInvalidRegistriesYamlKeepsTheOldConfigServing) {
  api_->SetData({{"registries.yaml", SealosB()}});
  api_->Start();
  StartShim(LocalConfig());
  ASSERT_TRUE(PullUntil(id_b_, 10s)) << shim_->Log();
  std::string before = ReadFile(path_);
  struct stat st_before {};
  ASSERT_EQ(stat(path_.c_str(), &st_before), 0);

  api_->SetData({{"registries.yaml", SealosA() + "registries:\n- address: ftp://broken\n"}});
  ASSERT_TRUE(LogHas("ConfigMap payload rejected")) << shim_->Log();
  EXPECT_TRUE(LogHas("registries[0].address"));
  EXPECT_EQ(ReadFile(path_), before);
  struct stat st_after {};
  ASSERT_EQ(stat(path_.c_str(), &st_after), 0);
  EXPECT_EQ(st_after.st_ino, st_before.st_ino);
  EXPECT_EQ(Pull(), id_b_);
}

TEST_F(ConfigE2E, ApiDownAtStartThenUp) {
  StartShim(LocalConfig());  // the API server is not listening yet
  EXPECT_EQ(Pull(), id_a_);
  ASSERT_TRUE(LogHas("ConfigMap sync: unreachable")) << shim_->Log();
  api_->SetData({{"registries.yaml", SealosB()}});
  api_->Start();
  ASSERT_TRUE(PullUntil(id_b_, 20s)) << shim_->Log();
  std::string log = shim_->Log();
  size_t first = log.find("ConfigMap sync: unreachable");
  EXPECT_EQ(log.find("ConfigMap sync: unreachable", first + 1), std::string::npos)
      << "the state change is logged once, not every retry";
}

TEST_F(ConfigE2E, ADroppedWatchAndA410LoseNoChange) {
  api_->SetData({{"registries.yaml", SealosA()}});
  api_->Start();
  StartShim(LocalConfig());
  ASSERT_TRUE(api_->WaitForOpenWatches(1, 10s));
  api_->DropWatches();
  api_->SetData({{"registries.yaml", SealosB()}});
  ASSERT_TRUE(PullUntil(id_b_, 5s)) << shim_->Log();

  // Down while the ConfigMap changes and history is compacted: the old resourceVersion is gone.
  api_->Stop();
  api_->SetData({{"registries.yaml", SealosA()}});
  api_->Compact();
  api_->Start();
  ASSERT_TRUE(PullUntil(id_a_, 20s)) << shim_->Log();
  EXPECT_EQ(api_->counts().gets, 2)
      << "listed again after 410: " << ::testing::PrintToString(api_->RequestLog());
}

TEST_F(ConfigE2E, LocalFileEditRenameSighupAndInvalidEdit) {
  StartShim(LocalConfig("configMap: {enabled: false}\n"));
  ASSERT_EQ(Pull(), id_a_);
  auto with_b = [&](const std::string& extra) {
    return "shim: " + dir_->File("shim.sock") + "\ncri: " + containerd_->Socket() +
           "\naddress: " + b_->Address() + "\nauth: \"" + kUserB + ":" + kPasswordB +
           "\"\nreloadInterval: 1h\nconfigMap: {enabled: false}\n" + extra;
  };
  WriteFile(path_, with_b(""));  // edited in place
  ASSERT_TRUE(PullUntil(id_b_, 5s)) << shim_->Log();

  WriteFile(dir_->File("config.yaml.tmp"), LocalConfig("configMap: {enabled: false}\n"));
  ASSERT_EQ(std::rename(dir_->File("config.yaml.tmp").c_str(), path_.c_str()), 0);
  ASSERT_TRUE(PullUntil(id_a_, 5s)) << shim_->Log();

  WriteFile(path_, with_b("timeout: soon\n"));  // invalid: rejected, A keeps serving
  ASSERT_TRUE(LogHas("config reload rejected")) << shim_->Log();
  // Quoted values in log lines escape their quotes.
  EXPECT_TRUE(LogHas("timeout: \\\"soon\\\" is not a duration"));
  EXPECT_EQ(Pull(), id_a_);

  shim_->Signal(SIGHUP);
  ASSERT_TRUE(LogHas("source=signal")) << shim_->Log();
  EXPECT_EQ(Pull(), id_a_);
}

TEST_F(ConfigE2E, ASteadyHourScaledDownCostsAtMostTwelveRequests) {
  // SHIM_KUBE_TIME_SCALE=0.01 turns the 10-minute watch into 6 s: an hour is 36 s.
  api_->SetData({{"registries.yaml", SealosA()}});
  api_->Start();
  StartShim(LocalConfig(), "0.01");
  auto start = Clock::now();
  ASSERT_TRUE(api_->WaitForRequests(1, 10s));
  std::this_thread::sleep_for(36s - (Clock::now() - start));  // the span measured, not a wait
  int requests = api_->counts().total;
  RecordProperty("requests_per_scaled_hour", requests);
  std::cout << "API requests in a scaled hour: " << requests << "\n";
  EXPECT_LE(requests, 12) << ::testing::PrintToString(api_->RequestLog());
  EXPECT_GE(api_->counts().watches, 3) << "watches are renewed, not held forever";
  api_->SetData({{"registries.yaml", SealosB()}});
  EXPECT_TRUE(PullUntil(id_b_, 2s)) << shim_->Log();
}

}  // namespace
}  // namespace shim::testing
