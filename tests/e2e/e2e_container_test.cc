// End-to-end tests of CreateContainer naming the image as the pod spec does ("ctr-app:1"), not
// by image id: a real pod sandbox (host network) and a real container in a real containerd,
// created, started, stopped and removed through the built shim, with a real TLS registry with
// credentials. With `imageNames: requested` (the default) containerd holds the image under that
// name itself; with `imageNames: registry` only under the registry's name, so the container can
// start only because the shim translates the name (over CRI v1 and v1alpha2). Direct at
// containerd, that name fails in registry mode: the control.
//
// The shim parses CreateContainerRequest with a smaller message of its own; what the container
// does and reports (command, args, env, labels, annotations, log path, and from the request's
// copy of the sandbox config the log directory and cgroup parent) shows that every other field
// arrived intact.
//
// The sandbox (pause) image is the test image with a command that keeps running (the test
// image's own /bin/sh would exit at once without stdin, and the sandbox with it), pushed to the
// test registry and pulled directly before any sandbox starts: containerd never reaches out.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "containerd.h"
#include "cri_client.h"
#include "cri_runtime_test.pb.h"
#include "registry.h"
#include "shim_process.h"
#include "subprocess.h"
#include "temp_dir.h"
#include "test_image.h"
#include "test_util.h"

namespace shim::testing {
namespace {

using std::chrono::seconds;
namespace rt = ::imagecrishim::cri::test;

constexpr char kUser[] = "ctr-user";
constexpr char kPassword[] = "ctr-pw-8k2m";
constexpr char kApp[] = "ctr-app:1";  // as a pod spec names it
constexpr char kShimSocketDir[] = "/run/containerd";

// CRI enums (tests/support/cri_runtime_test.proto keeps them as integers).
constexpr int kNamespaceNode = 2;     // NamespaceMode NODE
constexpr int kContainerRunning = 1;  // ContainerState
constexpr int kContainerExited = 2;
constexpr int kSandboxReady = 0;  // PodSandboxState SANDBOX_READY

const CallOptions kCall{.timeout = seconds(60)};
const CallOptions kPull{.timeout = seconds(120)};

// The test image with `busybox sleep` as its command, tagged "pause" in a copy of `base`'s
// layout under `dir`, readable by the unprivileged user skopeo runs as.
TestImage BuildPauseImage(const TestImage& base, const TempDir& dir) {
  namespace fs = std::filesystem;
  std::string layout = dir.File("pause-oci");
  fs::copy(base.layout_dir, layout, fs::copy_options::recursive);
  RunOrThrow({"umoci", "config", "--image", layout + ":" + base.tag, "--tag", "pause", "--clear",
              "config.cmd", "--config.cmd", "/bin/busybox", "--config.cmd", "sleep", "--config.cmd",
              "2147483647"});
  fs::permissions(dir.path(), fs::perms(0755));
  for (const auto& entry : fs::recursive_directory_iterator(layout)) {
    auto perms = fs::perms::group_read | fs::perms::others_read;
    if (entry.is_directory()) perms |= fs::perms::group_exec | fs::perms::others_exec;
    fs::permissions(entry.path(), perms, fs::perm_options::add);
  }
  fs::permissions(layout, fs::perms(0755), fs::perm_options::add);
  TestImage pause;  // its ids are not needed: only the sandbox runs it
  pause.origin = "pause";
  pause.layout_dir = layout;
  pause.tag = "pause";
  return pause;
}

// A RuntimeService call over `client`'s CRI version.
grpc::Status Runtime(CriClient& client, const std::string& method,
                     const google::protobuf::MessageLite& request,
                     google::protobuf::MessageLite* response) {
  return client.Call(client.RuntimePath(method), request, response, kCall);
}

// The cgroup `relative` ("/parent/id") in the pids hierarchy (cgroup v1) or the unified one.
bool CgroupExists(const std::string& relative) {
  return std::filesystem::exists("/sys/fs/cgroup/pids" + relative) ||
         std::filesystem::exists("/sys/fs/cgroup" + relative + "/cgroup.procs");
}

// Removes the (empty) cgroup `relative` from every hierarchy it was made in.
void RemoveCgroup(const std::string& relative) {
  std::error_code error;
  for (const auto& hierarchy : std::filesystem::directory_iterator("/sys/fs/cgroup", error)) {
    ::rmdir((hierarchy.path().string() + relative).c_str());  // absent there: nothing to do
  }
  ::rmdir(("/sys/fs/cgroup" + relative).c_str());  // cgroup v2
}

// A pod sandbox with host networking, as kubelet configures one for a hostNetwork pod, its
// cgroups (and its containers') under `cgroup_parent`.
rt::PodSandboxConfig SandboxConfig(const std::string& name, const std::string& log_directory,
                                   const std::string& cgroup_parent) {
  rt::PodSandboxConfig config;
  config.mutable_metadata()->set_name(name);
  config.mutable_metadata()->set_uid(name + "-uid");
  config.mutable_metadata()->set_namespace_("e2e");
  // No hostname: kubelet sets none for host networking, and runc refuses one without a UTS
  // namespace of the sandbox's own.
  config.set_log_directory(log_directory);
  (*config.mutable_labels())["io.kubernetes.pod.name"] = name;
  config.mutable_linux()->set_cgroup_parent(cgroup_parent);
  auto* namespaces =
      config.mutable_linux()->mutable_security_context()->mutable_namespace_options();
  namespaces->set_network(kNamespaceNode);
  return config;
}

// A test's sandboxes: whatever the test did not stop and remove itself (a failed assertion) is
// stopped and removed directly at containerd when this goes out of scope, before containerd
// stops, so no runc shim or container outlives the test; then their cgroup parent goes.
class SandboxGuard {
 public:
  explicit SandboxGuard(const std::string& socket)
      : socket_(socket), cgroup_parent_("/image-cri-shim-e2e-" + std::to_string(::getpid())) {}
  ~SandboxGuard() {
    CriClient direct(socket_);
    for (const auto& id : ids_) {
      rt::StopPodSandboxRequest stop;
      stop.set_pod_sandbox_id(id);
      rt::StopPodSandboxResponse stopped;
      Runtime(direct, "StopPodSandbox", stop, &stopped);  // an absent one is OK too
      rt::RemovePodSandboxRequest remove;
      remove.set_pod_sandbox_id(id);
      rt::RemovePodSandboxResponse removed;
      grpc::Status status = Runtime(direct, "RemovePodSandbox", remove, &removed);
      EXPECT_TRUE(status.ok()) << "cleanup of sandbox " << id << ": " << Describe(status);
    }
    RemoveCgroup(cgroup_parent_);
  }
  SandboxGuard(const SandboxGuard&) = delete;
  SandboxGuard& operator=(const SandboxGuard&) = delete;
  void Add(const std::string& id) { ids_.push_back(id); }
  const std::string& cgroup_parent() const { return cgroup_parent_; }

 private:
  std::string socket_;
  std::string cgroup_parent_;
  std::vector<std::string> ids_;
};

// What a container made from kApp reports, by the mode the shim runs in.
struct Expected {
  std::string image_id;    // ListContainers image_ref: the image id
  std::string status_tag;  // ContainerStatus image: containerd's first RepoTag of the image
  std::string status_ref;  // ContainerStatus image_ref: its first RepoDigest
  std::string greeting;    // the line the container writes to its log
};

class ContainerE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    run_containerd_existed_ = std::filesystem::exists(kShimSocketDir);
    try {
      registry_ =
          new Registry({.host_name = "registry-a.test", .username = kUser, .password = kPassword});
      app_ = new TestImage(PushImage(*registry_, "library/ctr-app:1"));
      image_dir_ = new TempDir("shim-pause");
      PushImage(*registry_, "library/pause:1", BuildPauseImage(*app_, *image_dir_));
    } catch (const std::exception& e) {
      setup_error_ = e.what();
    }
  }

  static void TearDownTestSuite() {
    // containerd 1.6 puts its runc shims' sockets under /run/containerd/s whatever its config
    // says; they are gone with the sandboxes, and the directories it made go too.
    if (!run_containerd_existed_) {
      ::rmdir((std::string(kShimSocketDir) + "/s").c_str());
      ::rmdir(kShimSocketDir);
    }
    delete image_dir_;
    delete app_;
    delete registry_;
    image_dir_ = nullptr;
    app_ = nullptr;
    registry_ = nullptr;
  }

  void SetUp() override {
    if (!setup_error_.empty()) GTEST_FAIL() << "suite setup failed: " << setup_error_;
    // A containerd per test: what one mode leaves under kApp's name must not help the other.
    containerd_ = std::make_unique<Containerd>(ContainerdOptions{.sandbox_image = PauseName()});
    direct_ = std::make_unique<CriClient>(containerd_->Socket());
    guard_ = std::make_unique<SandboxGuard>(containerd_->Socket());
    cri::AuthConfig auth = MakeAuth(kUser, kPassword);
    grpc::Status status = direct_->PullImage(PauseName(), &auth, nullptr, kPull);
    ASSERT_TRUE(status.ok()) << "pre-pull of the sandbox image: " << Describe(status);
    dir_ = std::make_unique<TempDir>("shim-ctr");
  }

  void TearDown() override {
    guard_.reset();  // sandboxes go before the shim and containerd
    if (shim_) {
      ExitStatus exit = shim_->Stop();
      EXPECT_TRUE(exit.Success()) << exit.ToString();
      EXPECT_EQ(shim_->Log().find(kPassword), std::string::npos) << "the shim logged a password";
      shim_.reset();
    }
    direct_.reset();
    containerd_.reset();
  }

  static std::string PauseName() { return registry_->ImageName("library/pause:1"); }

  // The shim in front of this test's containerd with the registry as its primary; started.
  ShimProcess& StartShim(const std::string& image_names) {
    std::string socket = dir_->File("shim.sock");
    std::string config = dir_->File("shim.yaml");
    std::string yaml = "shim: " + socket + "\n";
    yaml += "cri: " + containerd_->Socket() + "\n";
    yaml += "stateDir: " + dir_->File("state") + "\n";
    yaml += "address: " + registry_->Address() + "\n";
    yaml += std::string("auth: \"") + kUser + ":" + kPassword + "\"\n";
    if (!image_names.empty()) yaml += "imageNames: " + image_names + "\n";
    yaml += "configMap:\n  enabled: false\nmetricsAddress: \"\"\n";
    WriteFile(config, yaml, 0600);
    shim_ = std::make_unique<ShimProcess>(
        ShimOptions{.config_path = config, .socket_path = socket, .debug = true});
    shim_->Start();
    return *shim_;
  }

  std::string ShimLog() const { return shim_ ? "\nshim log:\n" + TailLines(shim_->Log()) : ""; }

  // RunPodSandbox over `client`; the id, or "" after a failed assertion.
  std::string RunSandbox(CriClient& client, const rt::PodSandboxConfig& config) {
    rt::RunPodSandboxRequest request;
    *request.mutable_config() = config;
    rt::RunPodSandboxResponse response;
    grpc::Status status = Runtime(client, "RunPodSandbox", request, &response);
    EXPECT_TRUE(status.ok()) << Describe(status) << ShimLog() << "\ncontainerd log:\n"
                             << TailLines(containerd_->LogText());
    if (!status.ok()) return "";
    guard_->Add(response.pod_sandbox_id());
    return response.pod_sandbox_id();
  }

  // The CreateContainerRequest kubelet would send for a container of kApp's image named
  // `image` in the sandbox: a command, args, env, labels, annotations and a log path.
  static rt::CreateContainerRequest AppContainer(const std::string& sandbox_id,
                                                 const rt::PodSandboxConfig& sandbox,
                                                 const std::string& image) {
    rt::CreateContainerRequest request;
    request.set_pod_sandbox_id(sandbox_id);
    *request.mutable_sandbox_config() = sandbox;
    rt::ContainerConfig& config = *request.mutable_config();
    config.mutable_metadata()->set_name("app");
    config.mutable_image()->set_image(image);
    config.add_command("/bin/sh");
    config.add_args("-c");
    config.add_args("echo \"$GREETING from $SHIM_TEST_ORIGIN\"; exec sleep 3600");
    rt::KeyValue* env = config.add_envs();
    env->set_key("GREETING");
    env->set_value("hello");
    (*config.mutable_labels())["io.kubernetes.container.name"] = "app";
    (*config.mutable_annotations())["e2e.image-cri-shim/requested"] = image;
    config.set_log_path("app/0.log");
    config.mutable_linux()->mutable_security_context()->mutable_namespace_options()->set_network(
        kNamespaceNode);
    return request;
  }

  std::optional<rt::ContainerStatus> Status(CriClient& client, const std::string& id) {
    rt::ContainerStatusRequest request;
    request.set_container_id(id);
    rt::ContainerStatusResponse response;
    grpc::Status status = Runtime(client, "ContainerStatus", request, &response);
    if (!status.ok()) return std::nullopt;
    return response.status();
  }

  // The sandbox is listed as ready (its pause process runs).
  bool SandboxReady(CriClient& client, const std::string& sandbox_id) {
    rt::ListPodSandboxRequest request;
    request.mutable_filter()->set_id(sandbox_id);
    rt::ListPodSandboxResponse response;
    grpc::Status status = Runtime(client, "ListPodSandbox", request, &response);
    EXPECT_TRUE(status.ok()) << Describe(status);
    return response.items_size() == 1 && response.items(0).state() == kSandboxReady;
  }

  std::vector<rt::Container> ContainersIn(CriClient& client, const std::string& sandbox_id) {
    rt::ListContainersRequest request;
    request.mutable_filter()->set_pod_sandbox_id(sandbox_id);
    rt::ListContainersResponse response;
    grpc::Status status = Runtime(client, "ListContainers", request, &response);
    EXPECT_TRUE(status.ok()) << Describe(status);
    return {response.containers().begin(), response.containers().end()};
  }

  // A pod with one container of kApp's image named as kubelet names it, through `client` (the
  // shim) from RunPodSandbox to RemovePodSandbox, checking what containerd reports on the way.
  void RunAppPod(CriClient& client, const std::string& pod, const Expected& expected,
                 const std::string& image = kApp) {
    SCOPED_TRACE(pod + " over CRI " + client.api() + ", image " + image);
    std::string log_dir = dir_->MakeDir("logs/" + pod);
    rt::PodSandboxConfig sandbox = SandboxConfig(pod, log_dir, guard_->cgroup_parent());
    std::string sandbox_id = RunSandbox(client, sandbox);
    ASSERT_FALSE(sandbox_id.empty());
    EXPECT_TRUE(SandboxReady(client, sandbox_id));

    rt::CreateContainerResponse created;
    grpc::Status status =
        Runtime(client, "CreateContainer", AppContainer(sandbox_id, sandbox, image), &created);
    ASSERT_TRUE(status.ok()) << Describe(status) << ShimLog();
    const std::string id = created.container_id();
    ASSERT_FALSE(id.empty());
    rt::StartContainerRequest start;
    start.set_container_id(id);
    rt::StartContainerResponse started;
    status = Runtime(client, "StartContainer", start, &started);
    ASSERT_TRUE(status.ok()) << Describe(status) << "\ncontainerd log:\n"
                             << TailLines(containerd_->LogText());

    // Running, and it has written its line: the image's env (SHIM_TEST_ORIGIN), the request's
    // command, args, env, log path and the sandbox's log directory all took effect.
    const std::string log_path = log_dir + "/app/0.log";
    std::optional<rt::ContainerStatus> seen;
    bool up = WaitUntil(
        [&] {
          seen = Status(client, id);
          return seen && seen->state() == kContainerRunning &&
                 ReadFileIfExists(log_path).find(expected.greeting) != std::string::npos;
        },
        seconds(30), std::chrono::milliseconds(50));
    ASSERT_TRUE(seen.has_value()) << "ContainerStatus failed";
    ASSERT_TRUE(up) << "state " << seen->state() << " exit " << seen->exit_code() << " "
                    << seen->reason() << " " << seen->message()
                    << "\nlog: " << ReadFileIfExists(log_path);
    EXPECT_NE(ReadFileIfExists(log_path).find(" stdout F " + expected.greeting + "\n"),
              std::string::npos)
        << ReadFileIfExists(log_path);
    EXPECT_EQ(seen->image().image(), expected.status_tag);
    EXPECT_EQ(seen->image_ref(), expected.status_ref);
    EXPECT_EQ(seen->metadata().name(), "app");
    EXPECT_EQ(seen->log_path(), log_path);
    EXPECT_EQ(seen->labels().at("io.kubernetes.container.name"), "app");
    EXPECT_EQ(seen->annotations().at("e2e.image-cri-shim/requested"), image);
    EXPECT_GT(seen->started_at(), 0);
    // The cgroup parent comes from the request's copy of the sandbox config.
    EXPECT_TRUE(CgroupExists(guard_->cgroup_parent() + "/" + id));

    auto listed = ContainersIn(client, sandbox_id);
    ASSERT_EQ(listed.size(), 1u);
    EXPECT_EQ(listed[0].id(), id);
    EXPECT_EQ(listed[0].state(), kContainerRunning);
    EXPECT_EQ(listed[0].image_ref(), expected.image_id);

    EXPECT_TRUE(SandboxReady(client, sandbox_id)) << "the sandbox's process ended";

    rt::StopContainerRequest stop;
    stop.set_container_id(id);
    stop.set_timeout(0);  // straight SIGKILL: `sleep` as pid 1 ignores SIGTERM
    rt::StopContainerResponse stopped;
    status = Runtime(client, "StopContainer", stop, &stopped);
    ASSERT_TRUE(status.ok()) << Describe(status);
    seen = Status(client, id);
    ASSERT_TRUE(seen.has_value());
    EXPECT_EQ(seen->state(), kContainerExited);
    EXPECT_GT(seen->finished_at(), 0);

    rt::RemoveContainerRequest remove;
    remove.set_container_id(id);
    rt::RemoveContainerResponse removed;
    status = Runtime(client, "RemoveContainer", remove, &removed);
    ASSERT_TRUE(status.ok()) << Describe(status);
    EXPECT_FALSE(Status(client, id).has_value()) << "the container is still there";
    EXPECT_TRUE(ContainersIn(*direct_, sandbox_id).empty());

    rt::StopPodSandboxRequest stop_sandbox;
    stop_sandbox.set_pod_sandbox_id(sandbox_id);
    rt::StopPodSandboxResponse sandbox_stopped;
    status = Runtime(client, "StopPodSandbox", stop_sandbox, &sandbox_stopped);
    ASSERT_TRUE(status.ok()) << Describe(status);
    rt::RemovePodSandboxRequest remove_sandbox;
    remove_sandbox.set_pod_sandbox_id(sandbox_id);
    rt::RemovePodSandboxResponse sandbox_removed;
    status = Runtime(client, "RemovePodSandbox", remove_sandbox, &sandbox_removed);
    ASSERT_TRUE(status.ok()) << Describe(status);
    rt::ListPodSandboxRequest list;
    list.mutable_filter()->set_id(sandbox_id);
    rt::ListPodSandboxResponse sandboxes;
    ASSERT_TRUE(Runtime(*direct_, "ListPodSandbox", list, &sandboxes).ok());
    EXPECT_EQ(sandboxes.items_size(), 0) << "the sandbox is still there";
  }

  std::string RegistryName(const std::string& repo_tag) const {
    return registry_->ImageName(repo_tag);
  }

  static Registry* registry_;
  static TestImage* app_;
  static TempDir* image_dir_;
  static std::string setup_error_;
  static bool run_containerd_existed_;
  std::unique_ptr<Containerd> containerd_;
  std::unique_ptr<CriClient> direct_;
  std::unique_ptr<SandboxGuard> guard_;
  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<ShimProcess> shim_;
};

Registry* ContainerE2E::registry_ = nullptr;
TestImage* ContainerE2E::app_ = nullptr;
TempDir* ContainerE2E::image_dir_ = nullptr;
std::string ContainerE2E::setup_error_;
bool ContainerE2E::run_containerd_existed_ = true;

// `imageNames: requested`: after a pull of kApp through the shim, a container of kApp by that
// name runs, made from the pulled image, and everything stops and goes away cleanly.
TEST_F(ContainerE2E, ContainerByRequestedNameRunsWithImageNamesRequested) {
  ShimProcess& shim = StartShim("");
  CriClient via_shim(shim.Socket());
  std::string image_ref;
  grpc::Status status = via_shim.PullImage(kApp, nullptr, &image_ref, kPull);
  ASSERT_TRUE(status.ok()) << Describe(status) << ShimLog();
  ASSERT_EQ(image_ref, app_->image_id);
  RunAppPod(via_shim, "requested",
            {.image_id = app_->image_id,
             .status_tag = "docker.io/library/ctr-app:1",
             .status_ref = "docker.io/library/ctr-app@" + app_->manifest_digest,
             .greeting = "hello from " + registry_->host_name()});
}

// `imageNames: registry`: containerd knows the image only under the registry's name, yet a
// container of kApp by kubelet's name runs through the shim, over CRI v1 and v1alpha2, and so do
// containers by its digest name and by its id (kubelet's usual request, passed through).
// Straight at containerd kApp fails and leaves no container; a name no registry has fails through
// the shim exactly as it fails at containerd.
TEST_F(ContainerE2E, ContainerByRequestedNameRunsWithImageNamesRegistry) {
  ShimProcess& shim = StartShim("registry");
  CriClient via_shim(shim.Socket());
  grpc::Status status = via_shim.PullImage(kApp, nullptr, nullptr, kPull);
  ASSERT_TRUE(status.ok()) << Describe(status) << ShimLog();
  cri::ImageStatusResponse held;
  ASSERT_TRUE(direct_->ImageStatus(kApp, &held, kCall).ok());
  ASSERT_FALSE(held.has_image()) << "containerd itself knows " << kApp;

  {
    SCOPED_TRACE("the control");
    std::string log_dir = dir_->MakeDir("logs/control");
    rt::PodSandboxConfig sandbox = SandboxConfig("control", log_dir, guard_->cgroup_parent());
    std::string sandbox_id = RunSandbox(*direct_, sandbox);
    ASSERT_FALSE(sandbox_id.empty());
    rt::CreateContainerResponse created;
    status =
        Runtime(*direct_, "CreateContainer", AppContainer(sandbox_id, sandbox, kApp), &created);
    EXPECT_FALSE(status.ok()) << "containerd created a container of " << kApp << " by itself";
    // containerd 1.6: NOT_FOUND "failed to resolve image \"ctr-app:1\": not found".
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << Describe(status);
    EXPECT_NE(status.error_message().find(kApp), std::string::npos) << Describe(status);

    const std::string absent = "ctr-app:2";
    grpc::Status direct =
        Runtime(*direct_, "CreateContainer", AppContainer(sandbox_id, sandbox, absent), &created);
    grpc::Status through =
        Runtime(via_shim, "CreateContainer", AppContainer(sandbox_id, sandbox, absent), &created);
    EXPECT_EQ(direct.error_code(), grpc::StatusCode::NOT_FOUND) << Describe(direct);
    EXPECT_EQ(Describe(through), Describe(direct));
    EXPECT_TRUE(ContainersIn(*direct_, sandbox_id).empty());
  }

  const Expected in_registry{
      .image_id = app_->image_id,
      .status_tag = RegistryName("library/ctr-app:1"),
      .status_ref = RegistryName("library/ctr-app") + "@" + app_->manifest_digest,
      .greeting = "hello from " + registry_->host_name()};
  for (const std::string api : {"v1", "v1alpha2"}) {
    CriClient client(shim.Socket(), api);
    RunAppPod(client, "registry-" + api, in_registry);
    if (HasFatalFailure()) return;
  }
  RunAppPod(via_shim, "registry-digest", in_registry, "ctr-app@" + app_->manifest_digest);
  if (HasFatalFailure()) return;
  RunAppPod(via_shim, "registry-id", in_registry, app_->image_id);
}

// An image pulled with `imageNames: registry` (held under the registry's name only), then the
// shim restarted with `imageNames: requested`: containerd still does not know kApp, yet a
// container of kApp by that name runs through the shim, made from that image.
TEST_F(ContainerE2E, ContainerByRequestedNameRunsForAnImageHeldUnderTheRegistrysNameFromBefore) {
  {
    ShimProcess& shim = StartShim("registry");
    CriClient via_shim(shim.Socket());
    grpc::Status status = via_shim.PullImage(kApp, nullptr, nullptr, kPull);
    ASSERT_TRUE(status.ok()) << Describe(status) << ShimLog();
    ExitStatus exit = shim_->Stop();
    ASSERT_TRUE(exit.Success()) << exit.ToString();
  }
  ShimProcess& shim = StartShim("");  // requested, the default
  CriClient via_shim(shim.Socket());
  cri::ImageStatusResponse held;
  ASSERT_TRUE(direct_->ImageStatus(kApp, &held, kCall).ok());
  ASSERT_FALSE(held.has_image()) << "containerd itself knows " << kApp;
  RunAppPod(via_shim, "before",
            {.image_id = app_->image_id,
             .status_tag = RegistryName("library/ctr-app:1"),
             .status_ref = RegistryName("library/ctr-app") + "@" + app_->manifest_digest,
             .greeting = "hello from " + registry_->host_name()});
}

}  // namespace
}  // namespace shim::testing
