// End-to-end tests of the pull policy on the node: per-namespace registries and credentials
// (`registries[].namespaces`), `allow` and `deny`, and `prePull`. The built shim between a CRI
// client (playing kubelet, which sends the pod's sandbox config with each pull) and a real
// containerd, with three real TLS registries, each with its own credentials:
//   S  shared: the primary, no `namespaces`, holds only what the test pushes there
//   A  tenant A's: namespaces [team-a]
//   B  tenant B's: namespaces ["tenant-*"]
// What the tests look at: the registries' access and error logs (which request, which user
// reached which registry), the image ids containerd holds (each registry's test image has its
// own), the answers' codes and messages, the shim's log and its metrics.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "containerd.h"
#include "cri_client.h"
#include "registry.h"
#include "shim_process.h"
#include "temp_dir.h"
#include "test_image.h"
#include "test_util.h"

namespace shim::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr char kUserS[] = "shared-user";
constexpr char kPasswordS[] = "pw-S-h4k2";
constexpr char kUserA[] = "tenant-a-user";
constexpr char kPasswordA[] = "pw-A-9x3c";
constexpr char kUserB[] = "tenant-b-user";
constexpr char kPasswordB[] = "pw-B-6v1n";

const CallOptions kQuick{.timeout = seconds(20)};
const CallOptions kPull{.timeout = seconds(120)};

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

int Count(const std::string& text, const std::string& part) {
  int n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

class PolicyE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    try {
      s_ = new Registry(
          {.host_name = "registry-c.test", .username = kUserS, .password = kPasswordS});
      a_ = new Registry(
          {.host_name = "registry-a.test", .username = kUserA, .password = kPasswordA});
      b_ = new Registry(
          {.host_name = "registry-b.test", .username = kUserB, .password = kPasswordB});
      containerd_ = new Containerd();
    } catch (const std::exception& e) {
      setup_error_ = e.what();
    }
  }

  static void TearDownTestSuite() {
    delete containerd_;
    delete b_;
    delete a_;
    delete s_;
    containerd_ = nullptr;
    a_ = b_ = s_ = nullptr;
  }

  void SetUp() override {
    if (!setup_error_.empty()) GTEST_FAIL() << "suite setup failed: " << setup_error_;
    if (!a_->Running()) a_->Start();
    dir_ = std::make_unique<TempDir>("shim-policy");
    direct_ = std::make_unique<CriClient>(containerd_->Socket());
  }

  void TearDown() override {
    if (!shim_) return;
    ExitStatus exit = shim_->Stop();
    EXPECT_TRUE(exit.Success()) << exit.ToString();
    for (const char* secret : {kPasswordS, kPasswordA, kPasswordB}) {
      EXPECT_FALSE(Contains(shim_->Log(), secret)) << "the shim logged a password";
    }
  }

  // The shim's configuration with S, A and B as above, plus `extra` top-level keys.
  std::string ConfigYaml(const std::string& extra = "") {
    if (metrics_port_ == 0) metrics_port_ = FreeLoopbackPort();
    return "shim: " + dir_->File("shim.sock") + "\ncri: " + containerd_->Socket() +
           "\nstateDir: " + dir_->File("state") + "\naddress: " + s_->Address() + "\nauth: \"" +
           kUserS + ":" + kPasswordS + "\"\nregistries:\n- address: " + a_->Address() +
           "\n  auth: \"" + kUserA + ":" + kPasswordA + "\"\n  namespaces: [team-a]\n" +
           "- address: " + b_->Address() + "\n  auth: \"" + kUserB + ":" + kPasswordB +
           "\"\n  namespaces: [\"tenant-*\"]\nconfigMap:\n  enabled: false\n" +
           "metricsAddress: \"127.0.0.1:" + std::to_string(metrics_port_) + "\"\n" + extra;
  }

  ShimProcess& StartShim(const std::string& extra = "") {
    WriteFile(dir_->File("shim.yaml"), ConfigYaml(extra), 0600);
    shim_ = std::make_unique<ShimProcess>(ShimOptions{.config_path = dir_->File("shim.yaml"),
                                                      .socket_path = dir_->File("shim.sock"),
                                                      .debug = true});
    shim_->Start();
    client_ = std::make_unique<CriClient>(shim_->Socket());
    return *shim_;
  }

  // kubelet's pull for a pod in `pod_namespace` ("" = no sandbox config, as crictl without
  // --pod-config). The image id, or the error as "CODE: message".
  std::string Pull(const std::string& image, const std::string& pod_namespace) {
    cri::PullImageRequest request;
    request.mutable_image()->set_image(image);
    if (!pod_namespace.empty()) {
      auto* metadata = request.mutable_sandbox_config()->mutable_metadata();
      metadata->set_name("pod-1");
      metadata->set_uid("uid-1");
      metadata->set_namespace_(pod_namespace);
    }
    cri::PullImageResponse response;
    grpc::Status status = client_->Call(client_->ImagePath("PullImage"), request, &response, kPull);
    if (!status.ok()) return Describe(status);
    return response.image_ref();
  }

  // Requests for `repo`'s manifests (any tag, GET or HEAD) that `registry` logged.
  static int ManifestRequests(const Registry& registry, const std::string& repo,
                              const std::string& tag) {
    std::string path = "/v2/" + repo + "/manifests/" + tag;
    return registry.CountRequests("GET", path) + registry.CountRequests("HEAD", path);
  }

  std::string Metrics() { return HttpGet(metrics_port_, "/metrics").body; }

  static Registry* s_;
  static Registry* a_;
  static Registry* b_;
  static Containerd* containerd_;
  static std::string setup_error_;
  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<CriClient> direct_;
  std::unique_ptr<ShimProcess> shim_;
  std::unique_ptr<CriClient> client_;
  int metrics_port_ = 0;
};

Registry* PolicyE2E::s_ = nullptr;
Registry* PolicyE2E::a_ = nullptr;
Registry* PolicyE2E::b_ = nullptr;
Containerd* PolicyE2E::containerd_ = nullptr;
std::string PolicyE2E::setup_error_;

// Each tenant's pull goes to its own registry with its own credentials (after the shared one,
// which lacks the image); neither tenant's credentials ever reach the other's registry (the
// registries log the user name of every login they refuse, and every request).
TEST_F(PolicyE2E, EachTenantsPullsGoOnlyToItsOwnRegistryWithItsOwnCredentials) {
  TestImage from_a = PushImage(*a_, "tenants/app:1");
  TestImage from_b = PushImage(*b_, "tenants/app:1");
  ASSERT_NE(from_a.image_id, from_b.image_id);
  StartShim();
  auto asked = [](const Registry& r) { return ManifestRequests(r, "tenants/app", "1"); };
  int a0 = asked(*a_), b0 = asked(*b_);
  EXPECT_EQ(Pull("tenants/app:1", "team-a"), from_a.image_id) << TailLines(shim_->Log());
  int a1 = asked(*a_), b1 = asked(*b_);
  EXPECT_GT(a1, a0) << "A was not asked for team-a's pull";
  EXPECT_EQ(b1, b0) << "B was asked for team-a's pull";
  ASSERT_TRUE(direct_->RemoveImage(from_a.image_id, kQuick).ok());
  EXPECT_EQ(Pull("tenants/app:1", "tenant-b-prod"), from_b.image_id) << TailLines(shim_->Log());
  EXPECT_EQ(asked(*a_), a1) << "A was asked for tenant-b-prod's pull";
  EXPECT_GT(asked(*b_), b1) << "B was not asked for tenant-b-prod's pull";
  ASSERT_TRUE(direct_->RemoveImage(from_b.image_id, kQuick).ok());
  int a2 = asked(*a_), b2 = asked(*b_);
  // A pod in no tenant's namespace, and a pull without a pod, get only the shared registry.
  std::string other = Pull("tenants/app:1", "default");
  EXPECT_TRUE(Contains(other, "NOT_FOUND")) << other;
  EXPECT_TRUE(Contains(other, s_->Host())) << other;
  EXPECT_FALSE(Contains(other, a_->Host())) << other;
  EXPECT_FALSE(Contains(other, b_->Host())) << other;
  std::string no_pod = Pull("tenants/app:1", "");
  EXPECT_TRUE(Contains(no_pod, "NOT_FOUND")) << no_pod;
  EXPECT_FALSE(Contains(no_pod, a_->Host()) || Contains(no_pod, b_->Host())) << no_pod;

  EXPECT_EQ(asked(*a_), a2) << "A was asked for a pull of no tenant";
  EXPECT_EQ(asked(*b_), b2) << "B was asked for a pull of no tenant";
  EXPECT_FALSE(Contains(b_->LogText(), kUserA)) << TailLines(b_->LogText(), 20);
  EXPECT_FALSE(Contains(a_->LogText(), kUserB)) << TailLines(a_->LogText(), 20);
  EXPECT_FALSE(Contains(a_->LogText(), kUserS) || Contains(b_->LogText(), kUserS));
}

// Tenant A's registry down: its pull fails naming every candidate it has (the shared one and
// A), and nothing is borrowed from B, which holds the image.
TEST_F(PolicyE2E, ATenantsRegistryDownFailsWithoutBorrowingAnothersRegistry) {
  PushImage(*a_, "tenants/down:1");
  PushImage(*b_, "tenants/down:1");
  StartShim();
  a_->Stop();
  int b_before = ManifestRequests(*b_, "tenants/down", "1");
  std::string result = Pull("tenants/down:1", "team-a");
  EXPECT_TRUE(Contains(result, "failed on every registry")) << result;
  EXPECT_TRUE(Contains(result, s_->Host())) << result;
  EXPECT_TRUE(Contains(result, a_->Host())) << result;
  EXPECT_FALSE(Contains(result, b_->Host())) << result;
  EXPECT_EQ(ManifestRequests(*b_, "tenants/down", "1"), b_before) << "B was asked";
  EXPECT_FALSE(Contains(b_->LogText(), kUserA));
  a_->Start();
}

// `deny` wins and `allow` limits: a refused pull is PERMISSION_DENIED naming the image and the
// rule, reaches no registry, is counted by rule, and is logged once however often kubelet
// retries it.
TEST_F(PolicyE2E, DeniedAndUnallowedImagesAreRefusedBeforeAnyRegistry) {
  PushImage(*s_, "library/allowed:1");
  PushImage(*s_, "blocked/app:1");
  PushImage(*s_, "elsewhere/app:1");
  StartShim("allow: [docker.io/library/, docker.io/blocked/]\ndeny: [docker.io/blocked/]\n");
  int hits_before =
      ManifestRequests(*s_, "blocked/app", "1") + ManifestRequests(*s_, "elsewhere/app", "1");
  for (int retry = 0; retry < 3; ++retry) {
    std::string denied = Pull("blocked/app:1", "team-a");
    EXPECT_TRUE(Contains(denied, "PERMISSION_DENIED")) << denied;
    EXPECT_TRUE(Contains(denied, "blocked/app:1")) << denied;
    EXPECT_TRUE(Contains(denied, "deny \"docker.io/blocked/\"")) << denied;
  }
  std::string unallowed = Pull("elsewhere/app:1", "");
  EXPECT_TRUE(Contains(unallowed, "PERMISSION_DENIED")) << unallowed;
  EXPECT_TRUE(Contains(unallowed, "no `allow` entry matches it")) << unallowed;
  EXPECT_EQ(ManifestRequests(*s_, "blocked/app", "1") + ManifestRequests(*s_, "elsewhere/app", "1"),
            hits_before)
      << "a refused image reached the registry";
  EXPECT_EQ(ManifestRequests(*a_, "blocked/app", "1") + ManifestRequests(*b_, "blocked/app", "1"),
            0);
  std::string allowed = Pull("allowed:1", "");
  EXPECT_EQ(allowed.rfind("sha256:", 0), 0u) << "an allowed image was refused: " << allowed;

  std::string metrics = Metrics();
  EXPECT_TRUE(
      Contains(metrics, "image_cri_shim_pulls_refused_total{rule=\"deny:docker.io/blocked/\"} 3"))
      << metrics;
  EXPECT_TRUE(Contains(metrics, "image_cri_shim_pulls_refused_total{rule=\"allow\"} 1")) << metrics;
  EXPECT_EQ(Count(shim_->Log(), "pull docker.io/blocked/app:1 refused by the node's pull policy"),
            1)
      << TailLines(shim_->Log());
}

// `prePull` at start: listed images are pulled without any caller (no pod: only the shared
// registry), an image already there is only checked; one that cannot be pulled yet is retried
// with backoff while kubelet's pulls and the socket keep working, and arrives once it can.
TEST_F(PolicyE2E, PrePullAtStartRetriesAFailureWhileServing) {
  TestImage early = PushImage(*s_, "platform/agent:1", "prepull-agent");
  TestImage there = PushImage(*s_, "platform/there:1", "prepull-there");
  cri::AuthConfig auth = MakeAuth(kUserS, kPasswordS);
  ASSERT_TRUE(direct_->PullImage(s_->ImageName("platform/there:1"), &auth, nullptr, kPull).ok());
  PushImage(*s_, "library/regular:1", "prepull-regular");
  StartShim("prePull: [platform/agent:1, platform/there:1, platform/late:1]\n");

  auto held = [&](const std::string& name, const std::string& id) {
    cri::ImageStatusResponse status;
    return client_->ImageStatus(name, &status, kQuick).ok() && status.image().id() == id;
  };
  EXPECT_TRUE(WaitUntil([&] { return held("platform/agent:1", early.image_id); }, seconds(30)))
      << TailLines(shim_->Log());
  EXPECT_TRUE(WaitUntil(
      [&] { return Contains(shim_->Log(), "prePull docker.io/platform/there:1: present already"); },
      seconds(10)))
      << TailLines(shim_->Log());
  EXPECT_TRUE(WaitUntil(
      [&] {
        return Contains(shim_->Log(), "prePull docker.io/platform/late:1: failed (image_absent)");
      },
      seconds(10)))
      << TailLines(shim_->Log());
  EXPECT_TRUE(Contains(Metrics(),
                       "image_cri_shim_prepull_state{image=\"docker.io/platform/late:1\","
                       "state=\"failed\",reason=\"image_absent\"} 1"))
      << Metrics();
  // Serving meanwhile: kubelet's own pull works.
  std::string regular = Pull("regular:1", "team-a");
  EXPECT_EQ(regular.rfind("sha256:", 0), 0u) << regular;
  // Once the registry has it, a retry (backoff from 5 s) brings it.
  TestImage late = PushImage(*s_, "platform/late:1", "prepull-late");
  EXPECT_TRUE(WaitUntil([&] { return held("platform/late:1", late.image_id); }, seconds(30)))
      << TailLines(shim_->Log());
  EXPECT_TRUE(WaitUntil(
      [&] {
        return Contains(Metrics(),
                        "image_cri_shim_prepull_state{image=\"docker.io/platform/late:1\","
                        "state=\"present\"} 1");
      },
      seconds(5)));
  EXPECT_EQ(
      ManifestRequests(*a_, "platform/agent", "1") + ManifestRequests(*b_, "platform/agent", "1"),
      0)
      << "a pull without a pod went to a tenant's registry";
}

// A change of the list (here the file; the ConfigMap goes through the same configuration store)
// pulls what it adds.
TEST_F(PolicyE2E, APrePullListChangePullsWhatItAdds) {
  TestImage first = PushImage(*s_, "platform/first:1", "prepull-first");
  TestImage added = PushImage(*s_, "platform/added:1", "prepull-added");
  StartShim("prePull: [platform/first:1]\n");
  auto held = [&](const std::string& name, const std::string& id) {
    cri::ImageStatusResponse status;
    return client_->ImageStatus(name, &status, kQuick).ok() && status.image().id() == id;
  };
  ASSERT_TRUE(WaitUntil([&] { return held("platform/first:1", first.image_id); }, seconds(30)));
  EXPECT_FALSE(held("platform/added:1", added.image_id));
  WriteFile(dir_->File("shim.yaml"), ConfigYaml("prePull: [platform/first:1, platform/added:1]\n"),
            0600);
  EXPECT_TRUE(WaitUntil([&] { return held("platform/added:1", added.image_id); }, seconds(30)))
      << TailLines(shim_->Log());
}

}  // namespace
}  // namespace shim::testing
