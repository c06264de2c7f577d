// Proves the end-to-end harness against real containerd and real registries directly, without
// the shim: what containerd answers here is what the shim's tests will build on (see the table
// in FACTS.md). Runs under tests/e2e/sandbox.sh (ctest e2e_runtime).
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <memory>
#include <string>

#include "containerd.h"
#include "cri_client.h"
#include "cri_runtime_test.pb.h"
#include "registry.h"
#include "subprocess.h"
#include "test_ca.h"
#include "test_image.h"
#include "test_util.h"

namespace shim::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
namespace crit = ::imagecrishim::cri::test;

bool HasTag(const cri::Image& image, const std::string& tag) {
  for (const auto& t : image.repo_tags()) {
    if (t == tag) return true;
  }
  return false;
}

// One registry with credentials and one containerd shared by the tests of this suite: starting
// them is the slow part. Tests use their own repository names so they do not interfere.
class RuntimeE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    try {
      registry_ = new Registry({.host_name = "registry-a.test",
                                .username = "alice",
                                .password = "a:secret with spaces",
                                .port = 0});
      nginx_ = new TestImage(PushImage(*registry_, "library/nginx:latest"));
      containerd_ = new Containerd();
    } catch (const std::exception& e) {
      setup_error_ = e.what();
    }
  }
  static void TearDownTestSuite() {
    delete containerd_;
    delete registry_;
    delete nginx_;
    containerd_ = nullptr;
    registry_ = nullptr;
    nginx_ = nullptr;
  }
  void SetUp() override {
    if (!setup_error_.empty()) GTEST_FAIL() << "harness setup failed: " << setup_error_;
    client_ = std::make_unique<CriClient>(containerd_->Socket());
  }

  cri::AuthConfig Auth() const { return MakeAuth(registry_->username(), registry_->password()); }

  static Registry* registry_;
  static Containerd* containerd_;
  static TestImage* nginx_;
  static std::string setup_error_;
  std::unique_ptr<CriClient> client_;
};

Registry* RuntimeE2E::registry_ = nullptr;
Containerd* RuntimeE2E::containerd_ = nullptr;
TestImage* RuntimeE2E::nginx_ = nullptr;
std::string RuntimeE2E::setup_error_;

TEST_F(RuntimeE2E, SandboxMapsTestNamesAndTrustsTheTestCa) {
  EXPECT_TRUE(TestCa::Available());
  EXPECT_NE(ReadFile("/etc/hosts").find("registry-a.test"), std::string::npos);
  EXPECT_EQ(registry_->HttpGet("/v2/"), 401);  // TLS verified against the sandbox's bundle
  EXPECT_EQ(registry_->HttpGet("/v2/", true), 200);
}

TEST_F(RuntimeE2E, PullWithCredentialsStoresTheImageUnderTheRegistryName) {
  std::string name = registry_->ImageName("library/nginx:latest");
  int before = registry_->CountRequests("GET", "/v2/library/nginx/manifests/latest", 200);
  cri::AuthConfig auth = Auth();
  std::string image_ref;
  grpc::Status status = client_->PullImage(name, &auth, &image_ref);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(image_ref, nginx_->image_id);
  // The harness can count what reached the registry (HEAD or GET, depending on the puller).
  int after = registry_->CountRequests("GET", "/v2/library/nginx/manifests/latest", 200) +
              registry_->CountRequests("HEAD", "/v2/library/nginx/manifests/latest", 200);
  EXPECT_GT(after, before) << TailLines(registry_->LogText(), 10);

  cri::ImageStatusResponse image;
  status = client_->ImageStatus(name, &image);
  ASSERT_TRUE(status.ok()) << Describe(status);
  ASSERT_TRUE(image.has_image());
  EXPECT_EQ(image.image().id(), nginx_->image_id);
  EXPECT_TRUE(HasTag(image.image(), name));
}

TEST_F(RuntimeE2E, PullWithoutCredentialsIsRefusedWith401) {
  grpc::Status status = client_->PullImage(registry_->ImageName("library/nginx:latest"), nullptr);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNKNOWN) << Describe(status);
  EXPECT_NE(status.error_message().find("401 Unauthorized"), std::string::npos) << Describe(status);
}

TEST_F(RuntimeE2E, PullWithWrongCredentialsIsRefusedWith401) {
  cri::AuthConfig auth = MakeAuth(registry_->username(), "wrong");
  grpc::Status status = client_->PullImage(registry_->ImageName("library/nginx:latest"), &auth);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNKNOWN) << Describe(status);
  EXPECT_NE(status.error_message().find("401 Unauthorized"), std::string::npos) << Describe(status);
}

TEST_F(RuntimeE2E, PullOfAnImageTheRegistryLacksIsNotFound) {
  cri::AuthConfig auth = Auth();
  grpc::Status status = client_->PullImage(registry_->ImageName("library/absent:1.0"), &auth);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << Describe(status);
  EXPECT_NE(status.error_message().find("not found"), std::string::npos) << Describe(status);
}

TEST_F(RuntimeE2E, ImageStatusOfAnAbsentImageIsOkWithoutImage) {
  cri::ImageStatusResponse image;
  grpc::Status status = client_->ImageStatus(registry_->ImageName("library/never:pulled"), &image);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_FALSE(image.has_image());
}

TEST_F(RuntimeE2E, ListImagesShowsPulledImagesAndFilters) {
  std::string name = registry_->ImageName("library/listed:v1");
  PushImage(*registry_, "library/listed:v1");
  cri::AuthConfig auth = Auth();
  ASSERT_TRUE(client_->PullImage(name, &auth).ok());

  cri::ListImagesResponse all;
  grpc::Status status = client_->ListImages("", &all);
  ASSERT_TRUE(status.ok()) << Describe(status);
  bool found = false;
  for (const auto& image : all.images()) found = found || HasTag(image, name);
  EXPECT_TRUE(found) << "ListImages did not show " << name;

  cri::ListImagesResponse filtered;
  status = client_->ListImages(name, &filtered);
  ASSERT_TRUE(status.ok()) << Describe(status);
  ASSERT_EQ(filtered.images_size(), 1);
  EXPECT_TRUE(HasTag(filtered.images(0), name));
}

TEST_F(RuntimeE2E, RemoveImageRemovesAndIsOkWhenAbsent) {
  std::string name = registry_->ImageName("library/removable:v1");
  PushImage(*registry_, "library/removable:v1");
  cri::AuthConfig auth = Auth();
  ASSERT_TRUE(client_->PullImage(name, &auth).ok());

  grpc::Status status = client_->RemoveImage(name);
  ASSERT_TRUE(status.ok()) << Describe(status);
  cri::ImageStatusResponse image;
  ASSERT_TRUE(client_->ImageStatus(name, &image).ok());
  EXPECT_FALSE(image.has_image());
  status = client_->RemoveImage(name);
  EXPECT_TRUE(status.ok()) << Describe(status);
}

TEST_F(RuntimeE2E, VersionAnswersOverV1AndV1alpha2) {
  cri::VersionResponse v1;
  grpc::Status status = client_->Version("v1", &v1);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(v1.runtime_name(), "containerd");
  EXPECT_EQ(v1.runtime_api_version(), "v1");

  cri::VersionResponse v1alpha2;
  status = client_->Version("v1alpha2", &v1alpha2);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(v1alpha2.runtime_name(), "containerd");
  EXPECT_EQ(v1alpha2.runtime_api_version(), "v1alpha2");
}

TEST_F(RuntimeE2E, ImageCallsWorkOverV1alpha2) {
  CriClient old_api(containerd_->Socket(), "v1alpha2");
  EXPECT_EQ(old_api.ImagePath("PullImage"), "/runtime.v1alpha2.ImageService/PullImage");
  std::string name = registry_->ImageName("library/nginx:latest");
  cri::AuthConfig auth = Auth();
  std::string image_ref;
  grpc::Status status = old_api.PullImage(name, &auth, &image_ref);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(image_ref, nginx_->image_id);
  cri::ImageStatusResponse image;
  ASSERT_TRUE(old_api.ImageStatus(name, &image).ok());
  EXPECT_TRUE(image.has_image());
}

TEST_F(RuntimeE2E, RawCallsCarryMetadataAndDeadlines) {
  cri::VersionRequest request;
  request.set_version("v1");
  std::string response;
  CallOptions options;
  options.metadata = {{"x-shim-test", "1"}};
  options.timeout = seconds(5);
  CallMetadata metadata;
  grpc::Status status = client_->Call("/runtime.v1.RuntimeService/Version",
                                      request.SerializeAsString(), &response, options, &metadata);
  ASSERT_TRUE(status.ok()) << Describe(status);
  cri::VersionResponse version;
  ASSERT_TRUE(version.ParseFromString(response));
  EXPECT_EQ(version.runtime_name(), "containerd");

  status = client_->Call("/runtime.v1.RuntimeService/NoSuchMethod", "", &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED) << Describe(status);

  // A deadline already past fails without reaching the runtime.
  options.timeout = milliseconds(-1000);
  status = client_->Call("/runtime.v1.RuntimeService/Version", request.SerializeAsString(),
                         &response, options);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << Describe(status);
}

TEST_F(RuntimeE2E, RuntimeServiceMessagesFromTheTestProto) {
  crit::ListContainersResponse containers;
  grpc::Status status = client_->Call(client_->RuntimePath("ListContainers"),
                                      crit::ListContainersRequest(), &containers);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(containers.containers_size(), 0);

  crit::ListPodSandboxResponse sandboxes;
  status = client_->Call(client_->RuntimePath("ListPodSandbox"), crit::ListPodSandboxRequest(),
                         &sandboxes);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(sandboxes.items_size(), 0);

  crit::StatusResponse runtime;
  status = client_->Call(client_->RuntimePath("Status"), crit::StatusRequest(), &runtime);
  ASSERT_TRUE(status.ok()) << Describe(status);
  bool has_runtime_ready = false;
  for (const auto& c : runtime.status().conditions()) {
    has_runtime_ready = has_runtime_ready || c.type() == "RuntimeReady";
  }
  EXPECT_TRUE(has_runtime_ready);

  crit::ImageFsInfoResponse fs;
  status = client_->Call(client_->ImagePath("ImageFsInfo"), crit::ImageFsInfoRequest(), &fs);
  ASSERT_TRUE(status.ok()) << Describe(status);
  ASSERT_GE(fs.image_filesystems_size(), 1);
  EXPECT_NE(fs.image_filesystems(0).fs_id().mountpoint().find(containerd_->dir()),
            std::string::npos);
}

// A second registry with other credentials: images from different registries are told apart by
// their ID; stopping a registry gives "connection refused", starting it again on the same port
// and storage serves the same image.
TEST_F(RuntimeE2E, SecondRegistryDistinctImageAndStopStart) {
  Registry backup(
      {.host_name = "registry-b.test", .username = "bob", .password = "b-secret", .port = 0});
  TestImage pushed = PushImage(backup, "library/nginx:latest");
  EXPECT_NE(pushed.image_id, nginx_->image_id);

  std::string name = backup.ImageName("library/nginx:latest");
  cri::AuthConfig auth = MakeAuth("bob", "b-secret");
  std::string image_ref;
  grpc::Status status = client_->PullImage(name, &auth, &image_ref);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(image_ref, pushed.image_id);
  // Credentials of registry A are no good at B.
  cri::AuthConfig other = Auth();
  EXPECT_NE(client_->PullImage(name, &other).error_message().find("401"), std::string::npos);

  backup.Stop();
  EXPECT_FALSE(backup.Running());
  status = client_->PullImage(name, &auth);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNKNOWN) << Describe(status);
  EXPECT_NE(status.error_message().find("connection refused"), std::string::npos)
      << Describe(status);

  backup.Start();
  status = client_->PullImage(name, &auth, &image_ref);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(image_ref, pushed.image_id);
}

// A containerd of its own: restart keeps the images (same root), and a client made before the
// restart works again after it (the channel reconnects).
TEST(ContainerdRestartE2E, RestartKeepsImagesAndClientsReconnect) {
  ASSERT_TRUE(TestCa::Available()) << "run under tests/e2e/sandbox.sh";
  Registry registry(
      {.host_name = "registry-c.test", .username = "carol", .password = "c-secret", .port = 0});
  TestImage pushed = PushImage(registry, "library/restart:v1");
  Containerd containerd;
  CriClient client(containerd.Socket());
  std::string name = registry.ImageName("library/restart:v1");
  cri::AuthConfig auth = MakeAuth("carol", "c-secret");
  ASSERT_TRUE(client.PullImage(name, &auth).ok());

  containerd.Stop();
  grpc::Status status = client.Version("v1", nullptr, CallOptions{.timeout = seconds(2)});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(status);

  containerd.Start();
  cri::ImageStatusResponse image;
  status =
      client.ImageStatus(name, &image, CallOptions{.timeout = seconds(10), .wait_for_ready = true});
  ASSERT_TRUE(status.ok()) << Describe(status);
  ASSERT_TRUE(image.has_image());
  EXPECT_EQ(image.image().id(), pushed.image_id);
  EXPECT_TRUE(client.RemoveImage(name).ok());
  EXPECT_TRUE(client.PullImage(name, &auth).ok());
}

TEST(SubprocessTest, ReportsExitAndStopsAProcessThatIgnoresSigterm) {
  TempDir dir("shim-sp");
  Subprocess quick({.argv = {"sh", "-c", "echo hello; exit 3"},
                    .env = {{"SHIM_X", "y"}},
                    .log_path = dir.File("quick.log"),
                    .working_dir = ""});
  quick.Start();
  auto exit = quick.WaitExit(seconds(10));
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->code, 3);
  EXPECT_EQ(quick.LogText(), "hello\n");

  Subprocess stubborn({.argv = {"sh", "-c", "trap '' TERM; echo ready; sleep 600 & wait"},
                       .log_path = dir.File("stubborn.log")});
  stubborn.Start();
  // SIGTERM before the trap is set would end it normally.
  ASSERT_TRUE(WaitUntil([&] { return stubborn.LogText() == "ready\n"; }, seconds(10)));
  pid_t group = stubborn.pid();
  auto started = std::chrono::steady_clock::now();
  ExitStatus stopped = stubborn.Stop(milliseconds(300));
  EXPECT_EQ(stopped.signal, SIGKILL) << stopped.ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - started, seconds(5));
  // The grandchild (sleep) went with the group.
  EXPECT_TRUE(WaitUntil([&] { return kill(-group, 0) != 0; }, seconds(5)));
}

TEST(SubprocessTest, MissingBinaryThrowsAndCommandLinesMaskCredentials) {
  Subprocess missing(
      {.argv = {"no-such-binary-xyz"}, .env = {}, .log_path = "", .working_dir = ""});
  EXPECT_THROW(missing.Start(), std::runtime_error);
  EXPECT_EQ(FormatCommandLine({"skopeo", "copy", "--dest-creds", "u:p", "a"}),
            "skopeo copy --dest-creds **** a");
  try {
    RunOrThrow({"sh", "-c", "exit 4", "--creds", "user:pw"});
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()).find("user:pw"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace shim::testing
