// End to end: registry credentials that exist only in a Kubernetes Secret. The built shim sits
// between a CRI client (playing kubelet) and a real containerd; a real TLS registry requires a
// password that neither the local file nor the ConfigMap holds: the ConfigMap's primary entry
// names a kubernetes.io/dockerconfigjson Secret (authSecret), served with the ConfigMap by the
// Kubernetes API test server (tests/kube). Then the password is rotated in the registry and in
// the Secret: new pulls work within two seconds. Runs under sandbox.sh (ctest e2e_secret);
// every process is started and stopped by the test that needs it.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "containerd.h"
#include "cri_client.h"
#include "kube_api_server.h"
#include "registry.h"
#include "shim_process.h"
#include "subprocess.h"
#include "temp_dir.h"
#include "test_image.h"
#include "test_util.h"

namespace shim::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr char kUser[] = "sec-e2e-user";
constexpr char kPassword1[] = "sec-e2e-pw-1-Hq4v";
constexpr char kPassword2[] = "sec-e2e-pw-2-Tn8c";
constexpr char kToken[] = "e2e-secret-token-3b9f";
constexpr char kImage[] = "docker.io/team/app:1";
constexpr char kType[] = "kubernetes.io/dockerconfigjson";

const CallOptions kPull{.timeout = std::chrono::seconds(60)};

class SecretE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    try {
      registry_ =
          new Registry({.host_name = "registry-a.test", .username = kUser, .password = kPassword1});
      image_id_ = PushImage(*registry_, "team/app:1").image_id;
      containerd_ = new Containerd();
      pki_dir_ = new TempDir("kube-pki");
      pki_ = new TestPki(MakeTestPki(pki_dir_->path()));
    } catch (const std::exception& e) {
      setup_error_ = e.what();
    }
  }
  static void TearDownTestSuite() {
    delete containerd_;
    delete registry_;
    delete pki_;
    delete pki_dir_;
  }

  void SetUp() override {
    if (!setup_error_.empty()) GTEST_FAIL() << "harness setup failed: " << setup_error_;
    dir_ = std::make_unique<TempDir>("sec");
    path_ = dir_->File("config.yaml");
    api_ = std::make_unique<KubeApiServer>(KubeApiServerOptions{
        .cert_path = pki_->server_cert, .key_path = pki_->server_key, .token = kToken});
    WriteFile(dir_->File("kubeconfig"), MakeKubeconfig(api_->Url(), pki_->ca_pem, kToken), 0600);
  }

  void TearDown() override {
    if (shim_) {
      shim_->Stop();
      std::string log = shim_->Log();
      for (const std::string& secret :
           {std::string(kPassword1), std::string(kPassword2), std::string(kToken),
            Base64(std::string(kUser) + ":" + kPassword1),
            Base64(std::string(kUser) + ":" + kPassword2)}) {
        EXPECT_EQ(log.find(secret), std::string::npos)
            << "a secret (" << secret.substr(0, 5) << "...) is in the shim's log";
      }
    }
    // Leave the registry as the suite found it.
    if (rotated_) SetRegistryPassword(kPassword1);
  }

  // The registry's htpasswd rewritten, and the registry restarted on the same port and storage.
  void SetRegistryPassword(const std::string& password) {
    std::string line = RunOrThrow({"htpasswd", "-Bbn", kUser, password});
    WriteFile(registry_->dir() + "/htpasswd", line.substr(0, line.find('\n')) + "\n", 0600);
    registry_->Stop();
    registry_->Start();
    rotated_ = password != kPassword1;
  }

  static std::map<std::string, std::string> SecretData(const std::string& password) {
    // As `kubectl create secret docker-registry` writes it, keyed by host:port.
    std::string json = R"({"auths":{")" + registry_->Host() + R"(":{"username":")" + kUser +
                       R"(","password":")" + password + R"(","auth":")" +
                       Base64(std::string(kUser) + ":" + password) + R"("}}})";
    return {{".dockerconfigjson", json}};
  }

  std::string Payload() const {
    return "version: v1\nsealos:\n  address: " + registry_->Address() + "\n  authSecret: regcred\n";
  }

  void StartShim() {
    // The local file knows the registry but not its password.
    WriteFile(path_,
              "shim: " + dir_->File("shim.sock") + "\ncri: " + containerd_->Socket() +
                  "\naddress: " + registry_->Address() + "\nreloadInterval: 1h\n" +
                  "stateDir: " + dir_->File("state") + "\n" +
                  "metricsAddress: 127.0.0.1:" + std::to_string(metrics_port_) + "\n",
              0644);
    shim_ = std::make_unique<ShimProcess>(
        ShimOptions{.config_path = path_,
                    .socket_path = dir_->File("shim.sock"),
                    .debug = true,  // debug lines must not leak secrets either
                    .env = {{"KUBECONFIG", dir_->File("kubeconfig")},
                            {"HOME", dir_->path()},
                            {"SHIM_KUBE_TIME_SCALE", "0.05"}}});
    shim_->Start();
    client_ = std::make_unique<CriClient>(shim_->Socket());
  }

  std::string Pull() {
    std::string ref;
    grpc::Status status = client_->PullImage(kImage, nullptr, &ref, kPull);
    if (!status.ok()) return "error: " + status.error_message();
    return ref;
  }

  std::optional<std::chrono::milliseconds> PullUntilOk(std::chrono::milliseconds timeout) {
    auto start = Clock::now();
    std::string last;
    while (Clock::now() - start < timeout) {
      last = Pull();
      if (last == image_id_) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
      }
      std::this_thread::sleep_for(50ms);
    }
    ADD_FAILURE() << "last pull: " << last;
    return std::nullopt;
  }

  // `image-cri-shim --dry-run` against the same API server; its output must hold no secret.
  std::string DryRun() {
    CommandResult result =
        RunCommand({ShimBinaryPath(), "--dry-run", "--file", path_},
                   {{"KUBECONFIG", dir_->File("kubeconfig")}, {"HOME", dir_->path()}}, 30s);
    for (const char* secret : {kPassword1, kPassword2}) {
      EXPECT_EQ(result.output.find(secret), std::string::npos) << result.output;
    }
    return result.output;
  }

  bool LogHas(const std::string& text, std::chrono::milliseconds timeout = 10s) {
    return WaitUntil([&] { return shim_->Log().find(text) != std::string::npos; }, timeout);
  }

  static Registry* registry_;
  static std::string image_id_;
  static Containerd* containerd_;
  static TempDir* pki_dir_;
  static TestPki* pki_;
  static std::string setup_error_;
  std::unique_ptr<TempDir> dir_;
  std::string path_;
  std::unique_ptr<KubeApiServer> api_;
  std::unique_ptr<ShimProcess> shim_;
  std::unique_ptr<CriClient> client_;
  bool rotated_ = false;
  int metrics_port_ = FreeLoopbackPort();
};

Registry* SecretE2E::registry_ = nullptr;
std::string SecretE2E::image_id_;
Containerd* SecretE2E::containerd_ = nullptr;
TempDir* SecretE2E::pki_dir_ = nullptr;
TestPki* SecretE2E::pki_ = nullptr;
std::string SecretE2E::setup_error_;

TEST_F(SecretE2E, APasswordOnlyInASecretPullsAndItsRotationAppliesWithinTwoSeconds) {
  api_->SetSecret("regcred", kType, SecretData(kPassword1));
  api_->SetData({{"registries.yaml", Payload()}});
  api_->Start();
  StartShim();
  ASSERT_TRUE(PullUntilOk(10s)) << shim_->Log();
  // The node keeps it under stateDir (0600), so the shim survives an API outage and a restart;
  // the operator's file never holds it.
  struct stat st {};
  ASSERT_TRUE(
      WaitUntil([&] { return stat(dir_->File("state/configmap.yaml").c_str(), &st) == 0; }, 5s));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(ReadFile(path_).find(kPassword1), std::string::npos);
  ASSERT_TRUE(api_->WaitForOpenWatches(2, 10s)) << "the ConfigMap's and the Secret's";

  // The registry's password is rotated first: the old one is refused...
  SetRegistryPassword(kPassword2);
  EXPECT_NE(Pull().find("401"), std::string::npos) << shim_->Log();
  // ...then the Secret: new pulls use the new password within two seconds.
  api_->SetSecret("regcred", kType, SecretData(kPassword2));
  auto took = PullUntilOk(2s);
  ASSERT_TRUE(took) << shim_->Log();
  RecordProperty("secret_rotation_to_pull_ms", static_cast<int>(took->count()));
  std::cout << "Secret rotation to a pull that uses it: " << took->count() << " ms\n";
  HttpAnswer metrics = HttpGet(metrics_port_, "/metrics");
  EXPECT_NE(
      metrics.body.find("image_cri_shim_secret_sync_state{secret=\"regcred\",state=\"synced\"} 1"),
      std::string::npos)
      << metrics.error << metrics.body;
  EXPECT_EQ(metrics.body.find(kPassword2), std::string::npos);
  auto counts = api_->counts();
  EXPECT_EQ(counts.secret_gets, 1) << "one read, then the watch";
  EXPECT_EQ(counts.gets, 1);

  // --dry-run reads the Secret too, so it judges the payload as the daemon does.
  std::string dry = DryRun();
  EXPECT_NE(dry.find("secret kube-system/regcred (authSecret): readable, entries for 1 registry"),
            std::string::npos)
      << dry;
  EXPECT_NE(dry.find("the payload is valid"), std::string::npos) << dry;
}

TEST_F(SecretE2E, AForbiddenSecretKeepsTheNodeServingItsLastGoodConfigMap) {
  // A first run leaves the password in the node's state directory...
  api_->SetSecret("regcred", kType, SecretData(kPassword1));
  api_->SetData({{"registries.yaml", Payload()}});
  api_->Start();
  StartShim();
  ASSERT_TRUE(PullUntilOk(10s)) << shim_->Log();
  shim_->Stop();
  shim_.reset();
  std::string file = ReadFile(path_);
  // ...then the Role stops naming the Secret and the shim restarts from that state.
  api_->ForbidSecret("regcred");
  shim_ =
      std::make_unique<ShimProcess>(ShimOptions{.config_path = path_,
                                                .socket_path = dir_->File("shim.sock"),
                                                .debug = true,
                                                .env = {{"KUBECONFIG", dir_->File("kubeconfig")},
                                                        {"HOME", dir_->path()},
                                                        {"SHIM_KUBE_TIME_SCALE", "0.05"}}});
  shim_->Start();
  client_ = std::make_unique<CriClient>(shim_->Socket());
  ASSERT_TRUE(LogHas("Secret sync: unauthorized")) << shim_->Log();
  ASSERT_TRUE(LogHas("ConfigMap payload rejected")) << shim_->Log();
  // Operators see it without reading logs.
  HttpAnswer metrics = HttpGet(metrics_port_, "/metrics");
  EXPECT_NE(metrics.body.find(
                "image_cri_shim_secret_sync_state{secret=\"regcred\",state=\"unauthorized\"} 1"),
            std::string::npos)
      << metrics.error << metrics.body;
  EXPECT_EQ(Pull(), image_id_) << shim_->Log();
  EXPECT_EQ(ReadFile(path_), file) << "nothing written";
  std::string dry = DryRun();
  EXPECT_NE(dry.find("secret kube-system/regcred (authSecret): cannot be read (grant"),
            std::string::npos)
      << dry;
  EXPECT_NE(dry.find("the payload would be rejected"), std::string::npos) << dry;
}

}  // namespace
}  // namespace shim::testing
