// Failover and recovery end to end: real containerd, real registries with TLS and credentials,
// and the shim in front. A registry that is stopped, lacks the image, rejects the shim's
// credentials or never answers must not stop a pull that another registry can serve; a registry
// that recovers gets the pulls back without anyone touching the shim.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "containerd.h"
#include "cri_client.h"
#include "registry.h"
#include "shim_process.h"
#include "silent_server.h"
#include "temp_dir.h"
#include "test_image.h"
#include "test_util.h"

namespace shim::testing {
namespace {

using namespace std::chrono_literals;

class FailoverE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    try {
      primary_ = new Registry({.host_name = "registry-a.test",
                               .username = "user-a",
                               .password = "pw-A-7f3k9:x",
                               .port = 0});
      backup_ = new Registry({.host_name = "registry-b.test",
                              .username = "user-b",
                              .password = "pw-B-q8w2e",
                              .port = 0});
      containerd_ = new Containerd();
    } catch (const std::exception& e) {
      setup_error_ = e.what();
    }
  }
  static void TearDownTestSuite() {
    delete containerd_;
    delete backup_;
    delete primary_;
  }

  void SetUp() override {
    if (!setup_error_.empty()) GTEST_FAIL() << "harness setup failed: " << setup_error_;
    if (!primary_->Running()) primary_->Start();
    if (!backup_->Running()) backup_->Start();
    dir_ = std::make_unique<TempDir>("shim-fo");
    direct_ = std::make_unique<CriClient>(containerd_->Socket());
  }

  void TearDown() override {
    if (shim_) {
      std::string log = shim_->Log();
      auto status = shim_->Stop();
      EXPECT_TRUE(status.Success()) << status.ToString();
      for (const auto* secret : {"pw-A-7f3k9", "pw-B-q8w2e", "wrong-pw-9z"}) {
        EXPECT_EQ(log.find(secret), std::string::npos) << "a password reached the log";
      }
    }
  }

  // Starts a shim whose primary is `primary_address` (with `primary_auth`) and whose backup is
  // registry B.
  void StartShim(const std::string& primary_address, const std::string& primary_auth,
                 const std::string& extra = "") {
    std::string config = "shim: " + dir_->File("shim.sock") + "\n" +
                         "cri: " + containerd_->Socket() + "\n" + "address: " + primary_address +
                         "\n" + "auth: \"" + primary_auth + "\"\n" +
                         "registries:\n"
                         "- address: " +
                         backup_->Address() + "\n" + "  auth: \"user-b:pw-B-q8w2e\"\n" +
                         "configMap:\n  enabled: false\n" + extra;
    WriteFile(dir_->File("config.yaml"), config, 0600);
    shim_ = std::make_unique<ShimProcess>(ShimOptions{.config_path = dir_->File("config.yaml"),
                                                      .socket_path = dir_->File("shim.sock")});
    shim_->Start();
    client_ = std::make_unique<CriClient>(shim_->Socket());
  }
  void StartShim() { StartShim(primary_->Address(), "user-a:pw-A-7f3k9:x"); }

  // Present in the runtime under `name` (asked directly, not through the shim)?
  bool StoredAs(const std::string& name) {
    cri::ImageStatusResponse response;
    auto status = direct_->ImageStatus(name, &response);
    return status.ok() && response.has_image();
  }

  // Held under kubelet's name (docker.io/<path>) with `registry_name` as the name it was pulled
  // as (the shim's label on containerd's record): the pull went to that registry.
  bool PulledFrom(const std::string& registry_name) {
    std::string path = registry_name.substr(registry_name.find('/') + 1);
    return direct_->PulledAs("docker.io/" + path) == registry_name;
  }

  int CountLog(const std::string& needle) { return CountOccurrences(shim_->Log(), needle); }

  static Registry* primary_;
  static Registry* backup_;
  static Containerd* containerd_;
  static std::string setup_error_;
  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<ShimProcess> shim_;
  std::unique_ptr<CriClient> client_;
  std::unique_ptr<CriClient> direct_;
};

Registry* FailoverE2E::primary_ = nullptr;
Registry* FailoverE2E::backup_ = nullptr;
Containerd* FailoverE2E::containerd_ = nullptr;
std::string FailoverE2E::setup_error_;

TEST_F(FailoverE2E, PrimaryStoppedThePullComesFromTheBackupWithoutWaiting) {
  auto backup_image = PushImage(*backup_, "library/fo-stopped:1");
  primary_->Stop();
  StartShim();
  auto start = std::chrono::steady_clock::now();
  std::string ref;
  auto status = client_->PullImage("fo-stopped:1", nullptr, &ref);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(ref, backup_image.image_id);
  EXPECT_TRUE(PulledFrom(backup_->ImageName("library/fo-stopped:1")));
  // A refused connection is answered at once; nothing waits for a timeout.
  EXPECT_LT(took, 10s);
  EXPECT_EQ(CountLog("registry=" + primary_->Address() + " reason="), 1);
}

TEST_F(FailoverE2E, RecoveredPrimaryGetsThePullsBackOnceTheProberSeesIt) {
  PushImage(*primary_, "library/fo-back:1", "registry-a.test");
  PushImage(*primary_, "library/fo-back:2", "registry-a.test");
  PushImage(*backup_, "library/fo-back:1", "registry-b.test");
  PushImage(*backup_, "library/fo-back:2", "registry-b.test");
  primary_->Stop();
  StartShim();
  ASSERT_TRUE(client_->PullImage("fo-back:1", nullptr).ok());
  EXPECT_TRUE(PulledFrom(backup_->ImageName("library/fo-back:1")));
  primary_->Start();
  ASSERT_TRUE(WaitUntil([&] { return CountLog("registry is back up") > 0; }, 20s, 100ms))
      << shim_->Log();
  std::string ref;
  ASSERT_TRUE(client_->PullImage("fo-back:2", nullptr, &ref).ok());
  EXPECT_TRUE(PulledFrom(primary_->ImageName("library/fo-back:2")));
  EXPECT_EQ(ref, BuildTestImage("registry-a.test").image_id);
}

TEST_F(FailoverE2E, ImageOnlyInTheBackupLeavesThePrimaryHealthy) {
  PushImage(*backup_, "library/fo-only-b:1");
  PushImage(*primary_, "library/fo-both:1", "registry-a.test");
  PushImage(*backup_, "library/fo-both:1", "registry-b.test");
  StartShim();
  ASSERT_TRUE(client_->PullImage("fo-only-b:1", nullptr).ok());
  EXPECT_TRUE(PulledFrom(backup_->ImageName("library/fo-only-b:1")));
  EXPECT_EQ(CountLog("marked down"), 0) << "an absent image is not a registry failure";
  ASSERT_TRUE(client_->PullImage("fo-both:1", nullptr).ok());
  EXPECT_TRUE(PulledFrom(primary_->ImageName("library/fo-both:1")));
}

TEST_F(FailoverE2E, EveryRegistryDownFailsClearlyNamingEachOne) {
  primary_->Stop();
  backup_->Stop();
  StartShim();
  auto start = std::chrono::steady_clock::now();
  auto status = client_->PullImage("fo-nowhere:1", nullptr);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 15s);
  ASSERT_FALSE(status.ok());
  const std::string& message = status.error_message();
  EXPECT_NE(message.find(primary_->Host()), std::string::npos) << message;
  EXPECT_NE(message.find(backup_->Host()), std::string::npos) << message;
  EXPECT_NE(message.find("registry unreachable"), std::string::npos) << message;
  EXPECT_EQ(message.find("pw-"), std::string::npos) << "no credential in errors";
}

TEST_F(FailoverE2E, AbsentEverywhereIsNotFound) {
  StartShim();
  auto status = client_->PullImage("fo-absent:1", nullptr);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << Describe(status);
}

TEST_F(FailoverE2E, RejectedPrimaryCredentialsFallBackAndAreLoggedOnce) {
  PushImage(*primary_, "library/fo-auth:1", "registry-a.test");
  PushImage(*primary_, "library/fo-auth:2", "registry-a.test");
  PushImage(*backup_, "library/fo-auth:1", "registry-b.test");
  PushImage(*backup_, "library/fo-auth:2", "registry-b.test");
  StartShim(primary_->Address(), "user-a:wrong-pw-9z");
  ASSERT_TRUE(client_->PullImage("fo-auth:1", nullptr).ok());
  ASSERT_TRUE(client_->PullImage("fo-auth:2", nullptr).ok());
  EXPECT_TRUE(PulledFrom(backup_->ImageName("library/fo-auth:1")));
  EXPECT_TRUE(PulledFrom(backup_->ImageName("library/fo-auth:2")));
  EXPECT_EQ(CountLog("registry rejected the shim's credentials"), 1) << shim_->Log();
  EXPECT_EQ(CountLog("marked down"), 0);
}

TEST_F(FailoverE2E, ConcurrentPullsOfOneImageMakeOneAttempt) {
  auto image = PushImage(*primary_, "library/fo-many:1");
  StartShim();
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&] {
      CriClient client(shim_->Socket());
      std::string ref;
      if (client.PullImage("fo-many:1", nullptr, &ref).ok() && ref == image.image_id) ok++;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 6);
  // containerd resolves a tag with one authenticated HEAD of the manifest per pull.
  EXPECT_EQ(primary_->CountRequests("HEAD", "/v2/library/fo-many/manifests/1", 200), 1);
}

// Pods in different namespaces that get the same registries (none has `namespaces` here) want
// the same pull: theirs join one attempt too.
TEST_F(FailoverE2E, ConcurrentPullsForPodsOfSeveralNamespacesMakeOneAttempt) {
  auto image = PushImage(*primary_, "library/fo-pods:1");
  StartShim();
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (const char* pod_namespace : {"default", "web", "kube-system", "batch"}) {
    threads.emplace_back([&, pod_namespace] {
      CriClient client(shim_->Socket());
      std::string ref;
      if (client.PullImageForPod("fo-pods:1", pod_namespace, nullptr, &ref).ok() &&
          ref == image.image_id) {
        ok++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 4);
  EXPECT_EQ(primary_->CountRequests("HEAD", "/v2/library/fo-pods/manifests/1", 200), 1)
      << TailLines(shim_->Log());
}

TEST_F(FailoverE2E, CallerCancelStopsTheFailover) {
  PushImage(*backup_, "library/fo-cancel:1");
  SilentServer silent;
  StartShim("https://registry-c.test:" + std::to_string(silent.port()), "");
  // A cancel, not a deadline: a deadline would also reach containerd as grpc-timeout and stop
  // its pull by itself, proving nothing about the shim.
  CallOptions options;
  options.cancel_after = 1500ms;
  auto status = client_->PullImage("fo-cancel:1", nullptr, nullptr, options);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << Describe(status);
  ASSERT_TRUE(WaitUntil([&] { return CountLog("cancelled by the caller") == 1; }, 5s, 50ms))
      << shim_->Log();
  // The runtime's pull was cancelled too, and the backup was never tried.
  // Go words it "context canceled", or "operation was canceled" when the dial was under way;
  // never "deadline exceeded": no deadline was set.
  auto cancelled = [&] {
    std::string log = containerd_->LogText();
    return log.find("context canceled") != std::string::npos ||
           log.find("operation was canceled") != std::string::npos;
  };
  EXPECT_TRUE(WaitUntil(cancelled, 10s, 100ms)) << TailLines(containerd_->LogText(), 15);
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(backup_->CountRequests("HEAD", "/v2/library/fo-cancel/manifests/1"), 0);
  EXPECT_FALSE(StoredAs(backup_->ImageName("library/fo-cancel:1")));
  EXPECT_FALSE(StoredAs("fo-cancel:1"));
}

TEST_F(FailoverE2E, ShimTimeoutBoundsAHangingPull) {
  SilentServer silent;
  StartShim("https://registry-c.test:" + std::to_string(silent.port()), "", "timeout: 2s\n");
  auto start = std::chrono::steady_clock::now();
  auto status = client_->PullImage("fo-hang:1", nullptr);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << Describe(status);
  EXPECT_NE(status.error_message().find("timeout"), std::string::npos);
  EXPECT_GE(took, 1900ms);
  EXPECT_LT(took, 8s);
}

// A reload in the middle of a pull changes nothing for that pull: its candidates, the registries
// it marks down or up and the labels of its metrics all come from the configuration it started
// with. The reload swaps the two registries, so a pull that read the new configuration for its
// second candidate would credit the hanging registry with the backup's success.
TEST_F(FailoverE2E, AReloadDuringAPullChangesNothingForThatPull) {
  auto backup_image = PushImage(*backup_, "library/fo-reload:1");
  auto silent = std::make_unique<SilentServer>();
  const std::string hanging = "https://registry-c.test:" + std::to_string(silent->port());
  const int metrics_port = FreeLoopbackPort();
  const std::string metrics = "metricsAddress: 127.0.0.1:" + std::to_string(metrics_port) + "\n";
  StartShim(hanging, "", "reloadInterval: 1h\n" + metrics);

  grpc::Status status;
  std::string ref;
  std::thread puller([&] { status = client_->PullImage("fo-reload:1", nullptr, &ref); });
  // containerd is inside the first candidate: connected to the registry that never answers.
  bool waiting = WaitUntil([&] { return silent->held() > 0; }, 20s, 20ms);
  if (waiting) {
    // The backup first, the hanging registry second: the opposite order, by rename.
    std::string swapped = "shim: " + dir_->File("shim.sock") + "\ncri: " + containerd_->Socket() +
                          "\naddress: " + backup_->Address() +
                          "\nauth: \"user-b:pw-B-q8w2e\"\nregistries:\n- address: " + hanging +
                          "\nconfigMap:\n  enabled: false\nreloadInterval: 1h\n" + metrics;
    WriteFile(dir_->File("config.yaml.new"), swapped, 0600);
    std::rename(dir_->File("config.yaml.new").c_str(), dir_->File("config.yaml").c_str());
    waiting = WaitUntil([&] { return CountLog("config reloaded source=file") == 1; }, 10s, 20ms);
  }
  silent.reset();  // the first candidate fails now: the pull goes on to the backup
  puller.join();
  ASSERT_TRUE(waiting) << "the pull never reached the hanging registry, or no reload\n"
                       << shim_->Log();
  ASSERT_TRUE(status.ok()) << Describe(status) << "\n" << shim_->Log();
  EXPECT_EQ(ref, backup_image.image_id);
  EXPECT_TRUE(PulledFrom(backup_->ImageName("library/fo-reload:1")));
  HttpAnswer scrape = HttpGet(metrics_port, "/metrics");
  EXPECT_NE(scrape.body.find("image_cri_shim_pulls_total{registry=\"" + backup_->Address() +
                             "\",result=\"ok\"} 1"),
            std::string::npos)
      << scrape.error << scrape.body;
  EXPECT_EQ(
      scrape.body.find("image_cri_shim_pulls_total{registry=\"" + hanging + "\",result=\"ok\"}"),
      std::string::npos)
      << "the backup's success was credited to the hanging registry\n"
      << scrape.body;
}

TEST_F(FailoverE2E, DryRunProbesEveryRegistry) {
  primary_->Stop();
  std::string config = "shim: " + dir_->File("dry.sock") + "\n" + "cri: " + containerd_->Socket() +
                       "\n" + "address: " + primary_->Address() + "\n" +
                       "auth: \"user-a:pw-A-7f3k9:x\"\n" +
                       "registries:\n"
                       "- address: " +
                       backup_->Address() + "\n" + "  auth: \"user-b:wrong-pw-9z\"\n" +
                       "configMap:\n  enabled: false\n";
  WriteFile(dir_->File("dry.yaml"), config, 0600);
  auto result =
      RunCommand({ShimBinaryPath(), "--dry-run", "--file", dir_->File("dry.yaml")}, {}, 30s);
  EXPECT_TRUE(result.status.Success()) << result.output;
  EXPECT_NE(result.output.find(primary_->Address() + ": down ("), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find(backup_->Address() + ": credentials rejected"), std::string::npos)
      << result.output;
  EXPECT_EQ(result.output.find("pw-"), std::string::npos) << "no password in the output";
  primary_->Start();
  result = RunCommand({ShimBinaryPath(), "--dry-run", "--file", dir_->File("dry.yaml")}, {}, 30s);
  EXPECT_NE(result.output.find(primary_->Address() + ": up, credentials accepted"),
            std::string::npos)
      << result.output;
}

}  // namespace
}  // namespace shim::testing
