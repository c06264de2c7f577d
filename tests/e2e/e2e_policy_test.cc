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
#include "silent_server.h"
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
    std::string image_ref;
    grpc::Status status =
        pod_namespace.empty()
            ? client_->PullImage(image, nullptr, &image_ref, kPull)
            : client_->PullImageForPod(image, pod_namespace, nullptr, &image_ref, kPull);
    return status.ok() ? image_ref : Describe(status);
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
  EXPECT_EQ(Pull("tenants/app:1", "tenant-b-prod"), from_b.image_id) << TailLines(shim_->Log());
  EXPECT_EQ(asked(*a_), a1) << "A was asked for tenant-b-prod's pull";
  EXPECT_GT(asked(*b_), b1) << "B was not asked for tenant-b-prod's pull";
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
  // Each registry logs the user of every request: A saw only A's, B only B's, and the shared
  // registry (asked first in every pull) neither tenant's.
  EXPECT_TRUE(Contains(a_->LogText(), kUserA)) << "A's log names no user: the checks below prove "
                                                  "nothing";
  EXPECT_TRUE(Contains(b_->LogText(), kUserB));
  EXPECT_FALSE(Contains(b_->LogText(), kUserA)) << TailLines(b_->LogText(), 20);
  EXPECT_FALSE(Contains(a_->LogText(), kUserB)) << TailLines(a_->LogText(), 20);
  EXPECT_FALSE(Contains(a_->LogText(), kUserS) || Contains(b_->LogText(), kUserS));
  EXPECT_FALSE(Contains(s_->LogText(), kUserA) || Contains(s_->LogText(), kUserB))
      << TailLines(s_->LogText(), 20);
}

// What a tenant's registry served is that tenant's alone, also on the node: it stays under the
// registry's name, kubelet's name finds it for no pod (a status call names none, so kubelet
// pulls and the pull's namespace decides), and no other namespace's pull replaces it or is
// replaced by it.
TEST_F(PolicyE2E, WhatATenantsRegistryServedIsFoundByNoOtherNamespace) {
  TestImage from_a = PushImage(*a_, "tenants/own:1");
  TestImage from_b = PushImage(*b_, "tenants/own:1");
  ASSERT_NE(from_a.image_id, from_b.image_id);
  StartShim();
  const std::string on_a = a_->ImageName("tenants/own:1");
  const std::string on_b = b_->ImageName("tenants/own:1");
  auto status_via_shim = [&](const std::string& name) {
    cri::ImageStatusResponse status;
    grpc::Status rpc = client_->ImageStatus(name, &status, kQuick);
    return rpc.ok() ? status.image().id() : Describe(rpc);
  };
  auto held_directly = [&](const std::string& name) {
    cri::ImageStatusResponse status;
    grpc::Status rpc = direct_->ImageStatus(name, &status, kQuick);
    return rpc.ok() ? status.image().id() : Describe(rpc);
  };

  // team-a's pull (the shared registry lacks the image, A serves it): under A's name only.
  EXPECT_EQ(Pull("tenants/own:1", "team-a"), from_a.image_id) << TailLines(shim_->Log());
  EXPECT_EQ(held_directly(on_a), from_a.image_id);
  EXPECT_EQ(held_directly("docker.io/tenants/own:1"), "") << "held under kubelet's name";
  EXPECT_TRUE(Contains(shim_->Log(), "held under the registry's name only"))
      << TailLines(shim_->Log());
  // A status call names no pod: present to it, the image would be any pod's.
  EXPECT_EQ(status_via_shim("tenants/own:1"), "");
  EXPECT_EQ(status_via_shim(on_a), "");

  // tenant-b's pull of the same name gets B's image and leaves team-a's as it was; team-a's
  // next pull gets A's again, not B's.
  EXPECT_EQ(Pull("tenants/own:1", "tenant-b-prod"), from_b.image_id) << TailLines(shim_->Log());
  EXPECT_EQ(held_directly(on_a), from_a.image_id);
  EXPECT_EQ(held_directly(on_b), from_b.image_id);
  EXPECT_EQ(Pull("tenants/own:1", "team-a"), from_a.image_id);

  // A pod elsewhere naming A's image outright pulls from A as the image's own registry, with
  // its own credentials (none): A refuses it, and it does not get team-a's copy.
  std::string stranger = Pull(on_a, "default");
  EXPECT_NE(stranger, from_a.image_id) << "another namespace got team-a's image";
  EXPECT_TRUE(Contains(stranger, "401") || Contains(stranger, "nauthorized")) << stranger;

  // Once the shared registry has the image, a pod in no tenant's namespace gets that one, under
  // kubelet's name, and the tenants' copies stay theirs.
  TestImage shared = PushImage(*s_, "tenants/own:1");
  ASSERT_NE(shared.image_id, from_a.image_id);
  EXPECT_EQ(Pull("tenants/own:1", "default"), shared.image_id);
  EXPECT_EQ(status_via_shim("tenants/own:1"), shared.image_id);
  EXPECT_EQ(held_directly(on_a), from_a.image_id);
  EXPECT_EQ(held_directly(on_b), from_b.image_id);
  EXPECT_FALSE(Contains(s_->LogText(), kUserA) || Contains(s_->LogText(), kUserB));
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
  EXPECT_EQ(CountOccurrences(shim_->Log(),
                             "pull docker.io/blocked/app:1 refused by the node's pull policy"),
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

// `allow` alone: what it lists is pulled, anything else is refused before any registry; and an
// image id, which names no registry the policy could judge, is refused too while a policy is in
// force (containerd would read "sha256:<hex>" as a tag of docker.io/library/sha256).
TEST_F(PolicyE2E, AllowAloneAdmitsOnlyWhatItListsAndNoImageId) {
  PushImage(*s_, "library/listed:1");
  PushImage(*s_, "other/unlisted:1");
  StartShim("allow: [docker.io/library/]\n");
  std::string listed = Pull("listed:1", "");
  EXPECT_EQ(listed.rfind("sha256:", 0), 0u) << listed;
  for (const char* pod_namespace : {"", "team-a", "tenant-b-1"}) {
    std::string unlisted = Pull("other/unlisted:1", pod_namespace);
    EXPECT_TRUE(Contains(unlisted, "PERMISSION_DENIED")) << unlisted;
    EXPECT_TRUE(Contains(unlisted, "no `allow` entry matches it (allow: docker.io/library/)"))
        << unlisted;
  }
  for (const Registry* registry : {s_, a_, b_}) {
    EXPECT_EQ(ManifestRequests(*registry, "other/unlisted", "1"), 0) << registry->Host();
  }
  std::string by_id = Pull("sha256:" + std::string(64, 'c'), "team-a");
  EXPECT_TRUE(Contains(by_id, "PERMISSION_DENIED")) << by_id;
  EXPECT_TRUE(Contains(by_id, "not an image name that `allow` and `deny` can be checked against"))
      << by_id;
  std::string metrics = Metrics();
  EXPECT_TRUE(Contains(metrics, "image_cri_shim_pulls_refused_total{rule=\"allow\"} 3")) << metrics;
  EXPECT_TRUE(Contains(metrics, "image_cri_shim_pulls_refused_total{rule=\"unchecked\"} 1"))
      << metrics;
}

// A prePull the policy refuses is not retried on a timer (the policy would say the same, and
// each retry would count as a refusal), but at once when the configuration changes.
TEST_F(PolicyE2E, ARefusedPrePullWaitsForTheConfigurationToChange) {
  TestImage image = PushImage(*s_, "platform/gated:1", "prepull-gated");
  StartShim("deny: [docker.io/platform/]\nprePull: [platform/gated:1]\n");
  const std::string refused_line = "prePull docker.io/platform/gated:1: refused";
  ASSERT_TRUE(WaitUntil([&] { return Contains(shim_->Log(), refused_line); }, seconds(20)))
      << TailLines(shim_->Log());
  EXPECT_TRUE(Contains(Metrics(),
                       "image_cri_shim_prepull_state{image=\"docker.io/platform/gated:1\","
                       "state=\"failed\",reason=\"refused\"} 1"))
      << Metrics();
  // Longer than the first retry of a failure (5 s, +20%): nothing is tried again.
  std::this_thread::sleep_for(seconds(7));
  EXPECT_EQ(CountOccurrences(shim_->Log(), refused_line), 1) << TailLines(shim_->Log());
  EXPECT_TRUE(Contains(Metrics(),
                       "image_cri_shim_pulls_refused_total{rule=\"deny:docker.io/platform/\"} 1"));
  EXPECT_EQ(ManifestRequests(*s_, "platform/gated", "1"), 0);
  // The rule goes: the image comes without waiting for any backoff.
  WriteFile(dir_->File("shim.yaml"), ConfigYaml("prePull: [platform/gated:1]\n"), 0600);
  EXPECT_TRUE(WaitUntil(
      [&] {
        cri::ImageStatusResponse status;
        return client_->ImageStatus("platform/gated:1", &status, kQuick).ok() &&
               status.image().id() == image.image_id;
      },
      seconds(30)))
      << TailLines(shim_->Log());
}

// A prePull stuck on a registry that accepts and never answers holds up nothing: the socket
// serves, /readyz says ready, kubelet's pulls from another registry work, and the image is
// reported pending meanwhile.
TEST_F(PolicyE2E, AHangingPrePullHoldsUpNeitherServingNorReadiness) {
  TestImage served = PushImage(*a_, "tenants/served:1");
  SilentServer silent;
  if (metrics_port_ == 0) metrics_port_ = FreeLoopbackPort();
  // The shared registry is the silent one: the prePull (no pod) can only go there.
  WriteFile(dir_->File("shim.yaml"),
            "shim: " + dir_->File("shim.sock") + "\ncri: " + containerd_->Socket() +
                "\nstateDir: " + dir_->File("state") + "\naddress: https://registry-c.test:" +
                std::to_string(silent.port()) + "\nregistries:\n- address: " + a_->Address() +
                "\n  auth: \"" + kUserA + ":" + kPasswordA +
                "\"\n  namespaces: [team-a]\nconfigMap:\n  enabled: false\n"
                "metricsAddress: \"127.0.0.1:" +
                std::to_string(metrics_port_) + "\"\nprePull: [platform/hangs:1]\n",
            0600);
  shim_ = std::make_unique<ShimProcess>(ShimOptions{.config_path = dir_->File("shim.yaml"),
                                                    .socket_path = dir_->File("shim.sock"),
                                                    .debug = true});
  shim_->Start();
  client_ = std::make_unique<CriClient>(shim_->Socket());
  ASSERT_TRUE(WaitUntil([&] { return silent.held() > 0; }, seconds(20)))
      << "the prePull never reached the registry: " << TailLines(shim_->Log());
  // The prePull is in flight now (containerd waits on the silent registry).
  EXPECT_TRUE(Contains(Metrics(),
                       "image_cri_shim_prepull_state{image=\"docker.io/platform/hangs:1\","
                       "state=\"pending\"} 1"))
      << Metrics();
  EXPECT_TRUE(Contains(shim_->Log(), "prePull docker.io/platform/hangs:1: pending"));
  EXPECT_EQ(HttpGet(metrics_port_, "/readyz").status, 200);
  EXPECT_EQ(Pull(a_->ImageName("tenants/served:1"), "team-a"), served.image_id)
      << TailLines(shim_->Log());
  cri::VersionResponse version;
  EXPECT_TRUE(client_->Version("v1", &version, kQuick).ok());
}

}  // namespace
}  // namespace shim::testing
