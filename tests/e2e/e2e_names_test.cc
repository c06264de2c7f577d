// End-to-end tests of the names a node holds images under: the built shim between a CRI client
// (playing kubelet, and cri-tools' conformance expectations) and a real containerd, with a real
// TLS registry with credentials. With `imageNames: requested` (the default) an image pulled
// through the registry must answer exactly as containerd answers for an image pulled directly
// under kubelet's name; `imageNames: registry` keeps the registry's names; a runtime without
// containerd's image API keeps them too and still serves; `pin` marks images `pinned`; images
// held under registry names from before, restarts and reloads (the file, and a ConfigMap of the
// Kubernetes API test server) keep every name working.
//
// What the tests look at is containerd's own view on its own socket: CRI ImageStatus and
// ListImages, and its image records (containerd.services.images.v1.Images, namespace k8s.io).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "containerd.h"
#include "containerd_images.pb.h"
#include "cri/requested_name.h"
#include "cri_client.h"
#include "image/reference.h"
#include "kube_api_server.h"
#include "registry.h"
#include "relay/event_loop.h"
#include "relay/upstream.h"
#include "shim_process.h"
#include "temp_dir.h"
#include "test_image.h"
#include "test_util.h"

namespace shim::testing {
namespace {

using std::chrono::seconds;
namespace records = ::imagecrishim::containerd;
namespace names = ::shim::cri;  // the shim's own image-call code (`cri` here is the messages)

constexpr char kUser[] = "names-user";
constexpr char kPassword[] = "names-pw-5t7u";
constexpr char kToken[] = "names-kube-token-4f8a2c";  // the Kubernetes API test server's

const CallOptions kQuick{.timeout = seconds(20)};
const CallOptions kPull{.timeout = seconds(120)};

std::vector<std::string> Tags(const cri::Image& image) {
  return {image.repo_tags().begin(), image.repo_tags().end()};
}
std::vector<std::string> Digests(const cri::Image& image) {
  return {image.repo_digests().begin(), image.repo_digests().end()};
}
using Names = std::vector<std::string>;

struct ShimSpec {
  std::string image_names = "";  // "" = the default
  std::vector<std::string> pin = {};
  // "" = configMap.enabled: false; else the kubeconfig through which the shim finds the
  // Kubernetes API (and kube-system/image-cri-shim in it)
  std::string kubeconfig = "";
};

class NamesE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    try {
      registry_ =
          new Registry({.host_name = "registry-a.test", .username = kUser, .password = kPassword});
      containerd_ = new Containerd();
    } catch (const std::exception& e) {
      setup_error_ = e.what();
    }
  }

  static void TearDownTestSuite() {
    delete containerd_;
    delete registry_;
    containerd_ = nullptr;
    registry_ = nullptr;
  }

  void SetUp() override {
    if (!setup_error_.empty()) GTEST_FAIL() << "suite setup failed: " << setup_error_;
    direct_ = std::make_unique<CriClient>(containerd_->Socket());
  }

  void TearDown() override {
    for (auto& shim : shims_) {
      ExitStatus exit = shim->Stop();
      EXPECT_TRUE(exit.Success()) << exit.ToString();
      EXPECT_EQ(shim->Log().find(kPassword), std::string::npos) << "the shim logged a password";
      EXPECT_EQ(shim->Log().find(kToken), std::string::npos) << "the shim logged the API token";
    }
    shims_.clear();
  }

  // A shim in front of `runtime` (the suite's containerd by default) with registry A as its
  // primary; started.
  ShimProcess& StartShim(const ShimSpec& spec = {}, Containerd* runtime = nullptr) {
    dirs_.push_back(std::make_unique<TempDir>("shim-names"));
    const TempDir& dir = *dirs_.back();
    runtime_ = runtime != nullptr ? runtime : containerd_;
    config_path_ = dir.File("shim.yaml");
    WriteFile(config_path_, ShimYaml(spec), 0600);
    std::map<std::string, std::string> env;
    if (!spec.kubeconfig.empty()) {
      env = {
          {"KUBECONFIG", spec.kubeconfig}, {"HOME", dir.path()}, {"SHIM_KUBE_TIME_SCALE", "0.05"}};
    }
    shims_.push_back(std::make_unique<ShimProcess>(ShimOptions{.config_path = config_path_,
                                                               .socket_path = dir.File("shim.sock"),
                                                               .debug = true,
                                                               .env = env}));
    shims_.back()->Start();
    return *shims_.back();
  }

  // The configuration file of the shim started last, for `spec`.
  std::string ShimYaml(const ShimSpec& spec) const {
    const TempDir& dir = *dirs_.back();
    std::string yaml = "shim: " + dir.File("shim.sock") + "\n";
    yaml += "cri: " + runtime_->Socket() + "\n";
    yaml += "stateDir: " + dir.File("state") + "\n";
    yaml += "address: " + registry_->Address() + "\n";
    yaml += std::string("auth: \"") + kUser + ":" + kPassword + "\"\n";
    if (!spec.image_names.empty()) yaml += "imageNames: " + spec.image_names + "\n";
    if (!spec.pin.empty()) {
      yaml += "pin:\n";
      for (const auto& p : spec.pin) yaml += "- " + p + "\n";
    }
    if (spec.kubeconfig.empty()) yaml += "configMap:\n  enabled: false\n";
    yaml += "metricsAddress: \"\"\n";
    return yaml;
  }

  // Rewrites the configuration file of the shim started last in place, as an operator's edit
  // does (the shim reloads it on the file event).
  void RewriteConfig(const ShimSpec& spec) { WriteFile(config_path_, ShimYaml(spec), 0600); }

  // Waits until the shim's log holds `text` `times` times.
  static bool LogHas(ShimProcess& shim, const std::string& text, int times = 1,
                     std::chrono::milliseconds timeout = seconds(10)) {
    return WaitUntil([&] { return CountOccurrences(shim.Log(), text) >= times; }, timeout);
  }

  // containerd's own CRI view of `name` (or id): the image, or nullopt when absent.
  std::optional<cri::Image> DirectStatus(const std::string& name, CriClient* client = nullptr) {
    cri::ImageStatusResponse response;
    grpc::Status status = (client ? client : direct_.get())->ImageStatus(name, &response, kQuick);
    EXPECT_TRUE(status.ok()) << Describe(status);
    if (!response.has_image()) return std::nullopt;
    return response.image();
  }

  // containerd's image record `name` in the CRI plugin's namespace, or nullopt (NOT_FOUND).
  std::optional<records::Image> Record(const std::string& name, Containerd* runtime = nullptr) {
    CriClient client((runtime ? runtime : containerd_)->Socket());
    grpc::Status status;
    auto record = client.ImageRecord(name, &status);
    if (status.error_code() != grpc::StatusCode::NOT_FOUND) {
      EXPECT_TRUE(status.ok()) << Describe(status);
    }
    return record;
  }

  // Every image containerd lists with `id`.
  std::vector<cri::Image> Listed(const std::string& id, CriClient* client = nullptr) {
    cri::ListImagesResponse all;
    grpc::Status status = (client ? client : direct_.get())->ListImages("", &all, kQuick);
    EXPECT_TRUE(status.ok()) << Describe(status);
    std::vector<cri::Image> out;
    for (const auto& image : all.images()) {
      if (image.id() == id) out.push_back(image);
    }
    return out;
  }

  std::string RegistryName(const std::string& repo_tag) const {
    return registry_->ImageName(repo_tag);
  }

  static Registry* registry_;
  static Containerd* containerd_;
  static std::string setup_error_;
  std::unique_ptr<CriClient> direct_;
  std::vector<std::unique_ptr<TempDir>> dirs_;
  std::vector<std::unique_ptr<ShimProcess>> shims_;  // destroyed before dirs_
  std::string config_path_;                          // of the shim started last
  Containerd* runtime_ = nullptr;                    // in front of which it runs
};

Registry* NamesE2E::registry_ = nullptr;
Containerd* NamesE2E::containerd_ = nullptr;
std::string NamesE2E::setup_error_;

// Pull by tag through registry A: the image answers under kubelet's name exactly as after a
// direct pull of that name (one tag, one digest, the same id), at once after the pull's answer
// and on every repeat; the registry's name is gone; the records say where the image came from.
TEST_F(NamesE2E, APullByTagIsHeldUnderExactlyTheRequestedName) {
  TestImage image = PushImage(*registry_, "library/alpha:1");
  ShimProcess& shim = StartShim();
  CriClient via_shim(shim.Socket());
  const std::string held = "docker.io/library/alpha:1";
  const std::string digest_name = "docker.io/library/alpha@" + image.manifest_digest;
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    std::string image_ref;
    grpc::Status status = via_shim.PullImage("alpha:1", nullptr, &image_ref, kPull);
    ASSERT_TRUE(status.ok()) << Describe(status) << "\n" << TailLines(shim.Log());
    EXPECT_EQ(image_ref, image.image_id);
    // No wait: kubelet's next call comes right after the answer.
    for (CriClient* client : {direct_.get(), &via_shim}) {
      auto found = DirectStatus("alpha:1", client);
      ASSERT_TRUE(found.has_value()) << client->socket_path();
      EXPECT_EQ(found->id(), image.image_id);
      EXPECT_EQ(Tags(*found), Names{held});
      EXPECT_EQ(Digests(*found), Names{digest_name});
    }
    EXPECT_FALSE(DirectStatus(RegistryName("library/alpha:1")).has_value());
    EXPECT_FALSE(Record(RegistryName("library/alpha:1")).has_value());
    EXPECT_FALSE(Record(RegistryName("library/alpha") + "@" + image.manifest_digest).has_value());
    auto listed = Listed(image.image_id, &via_shim);
    ASSERT_EQ(listed.size(), 1u);
    EXPECT_EQ(Tags(listed[0]), Names{held});
    if (round == 1) {  // a removal in between: the next pull starts from nothing
      ASSERT_TRUE(via_shim.RemoveImage("alpha:1", kQuick).ok());
      EXPECT_TRUE(Listed(image.image_id).empty());
    }
  }
  for (const std::string& name : {held, digest_name}) {
    auto record = Record(name);
    ASSERT_TRUE(record.has_value()) << name;
    EXPECT_EQ(record->target().digest(), image.manifest_digest);
    EXPECT_EQ(record->labels().at("io.cri-containerd.image"), "managed");
    EXPECT_EQ(record->labels().at("io.image-cri-shim.registry"), registry_->Host());
    EXPECT_EQ(record->labels().at("io.image-cri-shim.pulled-as"), RegistryName("library/alpha:1"));
  }
  EXPECT_NE(shim.Log().find("pull alpha:1 -> " + RegistryName("library/alpha:1") + " via " +
                            registry_->Host() + ": ok"),
            std::string::npos)
      << TailLines(shim.Log());
  EXPECT_NE(shim.Log().find("held as " + held + " and " + digest_name), std::string::npos)
      << TailLines(shim.Log());
  EXPECT_NE(shim.Log().find("image names: pulled images are held under the names kubelet asks "
                            "for"),
            std::string::npos)
      << TailLines(shim.Log());
}

// Pull by digest: RepoDigests holds the requested name with its digest, RepoTags is empty.
TEST_F(NamesE2E, APullByDigestHasNoTagAndTheRequestedDigestName) {
  TestImage image = PushImage(*registry_, "library/bydigest:1", "bydigest");
  ShimProcess& shim = StartShim();
  CriClient via_shim(shim.Socket());
  const std::string requested = "bydigest@" + image.manifest_digest;
  ASSERT_TRUE(via_shim.PullImage(requested, nullptr, nullptr, kPull).ok()) << TailLines(shim.Log());
  auto found = DirectStatus("docker.io/library/" + requested);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->id(), image.image_id);
  EXPECT_TRUE(Tags(*found).empty());
  EXPECT_EQ(Digests(*found), Names{"docker.io/library/" + requested});
  EXPECT_FALSE(Record(RegistryName("library/bydigest") + "@" + image.manifest_digest).has_value());
  // By the short name too, as kubelet asks.
  auto through = DirectStatus(requested, &via_shim);
  ASSERT_TRUE(through.has_value());
  EXPECT_EQ(through->id(), image.image_id);
}

// Pull by tag and digest: containerd's CRI drops the tag when a digest is present
// (reference.ParseDockerRef), so a direct pull holds only name@digest. Through the shim the image
// must end up the same: no tag, RepoDigests exactly [requested name@digest], no record under the
// registry's name or under name:tag@digest, and the names visible at once (no visibility wait
// running into its bound).
TEST_F(NamesE2E, APullByTagAndDigestIsHeldAsADirectPullHoldsIt) {
  TestImage image = PushImage(*registry_, "library/tagdigest:1", "tagdigest");
  ShimProcess& shim = StartShim();
  CriClient via_shim(shim.Socket());
  const std::string requested = "tagdigest:1@" + image.manifest_digest;
  const std::string held = "docker.io/library/tagdigest@" + image.manifest_digest;
  std::string image_ref;
  grpc::Status status = via_shim.PullImage(requested, nullptr, &image_ref, kPull);
  ASSERT_TRUE(status.ok()) << Describe(status) << TailLines(shim.Log());
  EXPECT_EQ(image_ref, image.image_id);
  auto found = DirectStatus(held);
  ASSERT_TRUE(found.has_value()) << TailLines(shim.Log());
  EXPECT_EQ(found->id(), image.image_id);
  EXPECT_TRUE(Tags(*found).empty());
  EXPECT_EQ(Digests(*found), Names{held});
  // kubelet asks by the name in the pod spec, tag and all: containerd and the shim both find it.
  for (CriClient* client : {direct_.get(), &via_shim}) {
    auto by_spec = DirectStatus(requested, client);
    ASSERT_TRUE(by_spec.has_value()) << client->socket_path();
    EXPECT_EQ(by_spec->id(), image.image_id);
  }
  EXPECT_FALSE(Record("docker.io/library/" + requested).has_value());
  EXPECT_FALSE(Record(RegistryName("library/tagdigest") + "@" + image.manifest_digest).has_value());
  EXPECT_FALSE(Record(RegistryName("library/" + requested)).has_value());
  EXPECT_EQ(shim.Log().find("does not show its new names"), std::string::npos)
      << TailLines(shim.Log());
  EXPECT_NE(shim.Log().find("held as " + held), std::string::npos) << TailLines(shim.Log());

  // The control: a direct pull of the registry's name with tag and digest has the same shape
  // and the same id.
  cri::AuthConfig auth = MakeAuth(kUser, kPassword);
  std::string direct_ref;
  ASSERT_TRUE(
      direct_->PullImage(RegistryName("library/" + requested), &auth, &direct_ref, kPull).ok());
  EXPECT_EQ(direct_ref, image.image_id);
  auto direct = DirectStatus(RegistryName("library/" + requested));
  ASSERT_TRUE(direct.has_value());
  EXPECT_TRUE(Tags(*direct).empty());
  auto digests = Digests(*direct);
  std::sort(digests.begin(), digests.end());
  Names expected = {held, RegistryName("library/tagdigest") + "@" + image.manifest_digest};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(digests, expected);
  ASSERT_TRUE(direct_->RemoveImage(image.image_id, kQuick).ok());
}

// Three images: three list entries with their own names; a filter by name gives that one; a
// removal by name, by id and by digest name leaves nothing in containerd.
TEST_F(NamesE2E, ThreeImagesAreListedFilteredAndRemovedByTheirOwnNames) {
  const std::vector<std::string> repos = {"one", "two", "three"};
  std::vector<TestImage> images;
  for (const auto& repo : repos) {
    images.push_back(PushImage(*registry_, "library/" + repo + ":1", "list-" + repo));
  }
  ShimProcess& shim = StartShim();
  CriClient via_shim(shim.Socket());
  for (const auto& repo : repos) {
    ASSERT_TRUE(via_shim.PullImage(repo + ":1", nullptr, nullptr, kPull).ok())
        << TailLines(shim.Log());
  }
  for (size_t i = 0; i < repos.size(); ++i) {
    for (CriClient* client : {direct_.get(), &via_shim}) {
      auto listed = Listed(images[i].image_id, client);
      ASSERT_EQ(listed.size(), 1u) << repos[i];
      EXPECT_EQ(Tags(listed[0]), Names{"docker.io/library/" + repos[i] + ":1"});
    }
    cri::ListImagesResponse filtered;
    ASSERT_TRUE(via_shim.ListImages(repos[i] + ":1", &filtered, kQuick).ok());
    ASSERT_EQ(filtered.images_size(), 1) << repos[i];
    EXPECT_EQ(filtered.images(0).id(), images[i].image_id);
    EXPECT_EQ(Tags(filtered.images(0)), Names{"docker.io/library/" + repos[i] + ":1"});
    EXPECT_EQ(Digests(filtered.images(0)),
              Names{"docker.io/library/" + repos[i] + "@" + images[i].manifest_digest});
  }
  ASSERT_TRUE(via_shim.RemoveImage("one:1", kQuick).ok());
  ASSERT_TRUE(via_shim.RemoveImage(images[1].image_id, kQuick).ok());
  ASSERT_TRUE(via_shim.RemoveImage("three@" + images[2].manifest_digest, kQuick).ok());
  for (size_t i = 0; i < repos.size(); ++i) {
    EXPECT_TRUE(Listed(images[i].image_id).empty()) << repos[i] << " is still listed";
    EXPECT_FALSE(Record("docker.io/library/" + repos[i] + ":1").has_value()) << repos[i];
    EXPECT_FALSE(Record(images[i].image_id).has_value()) << repos[i];
  }
}

// A re-pushed tag: the second pull moves the name to the new content, as a direct pull would
// (the old image keeps only its digest name).
TEST_F(NamesE2E, ARepulledTagMovesToTheNewContent) {
  TestImage first = PushImage(*registry_, "library/moving:1", "moving-first");
  ShimProcess& shim = StartShim();
  CriClient via_shim(shim.Socket());
  ASSERT_TRUE(via_shim.PullImage("moving:1", nullptr, nullptr, kPull).ok());
  TestImage second = PushImage(*registry_, "library/moving:1", "moving-second");
  ASSERT_NE(first.image_id, second.image_id);
  std::string image_ref;
  ASSERT_TRUE(via_shim.PullImage("moving:1", nullptr, &image_ref, kPull).ok())
      << TailLines(shim.Log());
  EXPECT_EQ(image_ref, second.image_id);
  auto now = DirectStatus("moving:1", &via_shim);
  ASSERT_TRUE(now.has_value());
  EXPECT_EQ(now->id(), second.image_id);
  EXPECT_EQ(Tags(*now), Names{"docker.io/library/moving:1"});
  auto old = DirectStatus(first.image_id);
  ASSERT_TRUE(old.has_value());
  EXPECT_TRUE(Tags(*old).empty());
  EXPECT_EQ(Digests(*old), Names{"docker.io/library/moving@" + first.manifest_digest});
}

// A name that containerd held before the pull (pulled directly under the registry's name) is
// not the shim's to delete: the image then has both names.
TEST_F(NamesE2E, ARegistryNameThatExistedBeforeThePullIsKept) {
  TestImage image = PushImage(*registry_, "library/kept:1", "kept");
  cri::AuthConfig auth = MakeAuth(kUser, kPassword);
  ASSERT_TRUE(direct_->PullImage(RegistryName("library/kept:1"), &auth, nullptr, kPull).ok());
  ShimProcess& shim = StartShim();
  CriClient via_shim(shim.Socket());
  ASSERT_TRUE(via_shim.PullImage("kept:1", nullptr, nullptr, kPull).ok());
  auto found = DirectStatus("kept:1");
  ASSERT_TRUE(found.has_value());
  auto tags = Tags(*found);
  std::sort(tags.begin(), tags.end());
  EXPECT_EQ(tags, (Names{"docker.io/library/kept:1", RegistryName("library/kept:1")}));
  EXPECT_NE(shim.Log().find("kept " + RegistryName("library/kept:1") +
                            " (it was there before this pull)"),
            std::string::npos)
      << TailLines(shim.Log());
}

// Concurrent pulls of one name that do not coalesce (each kubelet call with other credentials)
// all succeed and leave the image under the requested name only.
TEST_F(NamesE2E, ConcurrentPullsOfOneNameLeaveItHeldOnce) {
  TestImage image = PushImage(*registry_, "library/together:1", "together");
  ShimProcess& shim = StartShim();
  std::vector<std::thread> threads;
  std::vector<grpc::Status> results(4);
  std::vector<std::optional<cri::Image>> seen(4);
  for (size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([&, i] {
      CriClient client(shim.Socket());
      cri::AuthConfig auth = MakeAuth("kubelet-" + std::to_string(i), "unused");
      results[i] = client.PullImage("together:1", &auth, nullptr, kPull);
      cri::ImageStatusResponse status;
      if (results[i].ok() && client.ImageStatus("together:1", &status, kQuick).ok() &&
          status.has_image()) {
        seen[i] = status.image();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < results.size(); ++i) {
    ASSERT_TRUE(results[i].ok()) << i << ": " << Describe(results[i]) << TailLines(shim.Log());
    ASSERT_TRUE(seen[i].has_value()) << i << ": absent right after its pull";
    EXPECT_EQ(seen[i]->id(), image.image_id);
  }
  auto found = DirectStatus("together:1");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(Tags(*found), Names{"docker.io/library/together:1"});
  EXPECT_FALSE(Record(RegistryName("library/together:1")).has_value());
}

// `imageNames: registry`: the image stays under the registry's name; kubelet's name is
// translated by the shim, not known to containerd.
TEST_F(NamesE2E, RegistryModeKeepsTheRegistrysName) {
  TestImage image = PushImage(*registry_, "library/regmode:1", "regmode");
  ShimProcess& shim = StartShim({.image_names = "registry"});
  CriClient via_shim(shim.Socket());
  ASSERT_TRUE(via_shim.PullImage("regmode:1", nullptr, nullptr, kPull).ok());
  auto stored = DirectStatus(RegistryName("library/regmode:1"));
  ASSERT_TRUE(stored.has_value());
  EXPECT_EQ(Tags(*stored), Names{RegistryName("library/regmode:1")});
  EXPECT_FALSE(DirectStatus("regmode:1").has_value());
  auto through = DirectStatus("regmode:1", &via_shim);
  ASSERT_TRUE(through.has_value());
  EXPECT_EQ(through->id(), image.image_id);
  EXPECT_NE(shim.Log().find("image names: pulled images stay under the registries' names"),
            std::string::npos)
      << TailLines(shim.Log());
}

// `pin`: images held under a matching name answer pinned, over both CRI versions, in status
// (by name and by id), in the whole list and in a filtered one; others do not; containerd alone
// pins nothing.
TEST_F(NamesE2E, PinnedFollowsThePinRulesOverV1AndV1alpha2) {
  TestImage pinned = PushImage(*registry_, "platform/agent:1", "pin-agent");
  TestImage free = PushImage(*registry_, "library/free:1", "pin-free");
  ShimProcess& shim = StartShim({.pin = {"docker.io/platform"}});
  {
    CriClient via_shim(shim.Socket());
    ASSERT_TRUE(via_shim.PullImage("platform/agent:1", nullptr, nullptr, kPull).ok());
    ASSERT_TRUE(via_shim.PullImage("free:1", nullptr, nullptr, kPull).ok());
  }
  for (const std::string api : {"v1", "v1alpha2"}) {
    SCOPED_TRACE(api);
    CriClient via_shim(shim.Socket(), api);
    for (const auto& [name, image, expected] :
         {std::tuple{std::string("platform/agent:1"), pinned, true},
          std::tuple{std::string("free:1"), free, false}}) {
      auto by_name = DirectStatus(name, &via_shim);
      ASSERT_TRUE(by_name.has_value()) << name;
      EXPECT_EQ(by_name->pinned(), expected) << name;
      auto by_id = DirectStatus(image.image_id, &via_shim);
      ASSERT_TRUE(by_id.has_value()) << name;
      EXPECT_EQ(by_id->pinned(), expected) << name << " by id";
      auto listed = Listed(image.image_id, &via_shim);
      ASSERT_EQ(listed.size(), 1u) << name;
      EXPECT_EQ(listed[0].pinned(), expected) << name << " in the list";
      cri::ListImagesResponse filtered;
      ASSERT_TRUE(via_shim.ListImages(name, &filtered, kQuick).ok());
      ASSERT_EQ(filtered.images_size(), 1) << name;
      EXPECT_EQ(filtered.images(0).pinned(), expected) << name << " in a filtered list";
      auto direct = DirectStatus(name);
      ASSERT_TRUE(direct.has_value());
      EXPECT_FALSE(direct->pinned()) << "containerd itself pinned " << name;
    }
  }
}

// Restarts of the shim and of containerd keep every name: they are containerd's records.
TEST_F(NamesE2E, NamesSurviveRestartsOfTheShimAndOfContainerd) {
  Containerd own;
  TestImage image = PushImage(*registry_, "library/durable:1", "durable");
  {
    ShimProcess& shim = StartShim({}, &own);
    CriClient via_shim(shim.Socket());
    ASSERT_TRUE(via_shim.PullImage("durable:1", nullptr, nullptr, kPull).ok())
        << TailLines(shim.Log());
  }
  TearDown();  // the shim stops
  own.Restart();
  ShimProcess& shim = StartShim({}, &own);
  CriClient via_shim(shim.Socket());
  CriClient direct(own.Socket());
  for (CriClient* client : {&direct, &via_shim}) {
    auto found = DirectStatus("durable:1", client);
    ASSERT_TRUE(found.has_value()) << client->socket_path();
    EXPECT_EQ(found->id(), image.image_id);
    EXPECT_EQ(Tags(*found), Names{"docker.io/library/durable:1"});
    EXPECT_EQ(Digests(*found), Names{"docker.io/library/durable@" + image.manifest_digest});
  }
  EXPECT_FALSE(DirectStatus(RegistryName("library/durable:1"), &direct).has_value());
}

// A runtime that does not serve containerd's image API (here containerd with that service
// disabled, as CRI-O and cri-dockerd answer): the shim says so at start, pulls still work, the
// image stays under the registry's name and kubelet's name still resolves.
TEST_F(NamesE2E, ARuntimeWithoutTheImageApiKeepsRegistryNamesAndServes) {
  Containerd other({.without_image_api = true});
  TestImage image = PushImage(*registry_, "library/elsewhere:1", "elsewhere");
  ShimProcess& shim = StartShim({}, &other);
  CriClient via_shim(shim.Socket());
  CriClient direct(other.Socket());
  std::string image_ref;
  grpc::Status status = via_shim.PullImage("elsewhere:1", nullptr, &image_ref, kPull);
  ASSERT_TRUE(status.ok()) << Describe(status) << TailLines(shim.Log());
  EXPECT_EQ(image_ref, image.image_id);
  auto stored = DirectStatus(RegistryName("library/elsewhere:1"), &direct);
  ASSERT_TRUE(stored.has_value());
  EXPECT_EQ(Tags(*stored), Names{RegistryName("library/elsewhere:1")});
  auto through = DirectStatus("elsewhere:1", &via_shim);
  ASSERT_TRUE(through.has_value());
  EXPECT_EQ(through->id(), image.image_id);
  EXPECT_NE(shim.Log().find("image names: the runtime does not serve containerd's image API "
                            "(UNIMPLEMENTED"),
            std::string::npos)
      << TailLines(shim.Log());
}

// A restart of the shim alone (containerd and its records stay): kubelet's names still list,
// filter and remove, with nothing the shim remembered from before the restart.
TEST_F(NamesE2E, AfterARestartOfTheShimAloneKubeletsNamesListAndRemove) {
  TestImage image = PushImage(*registry_, "library/again:1", "again");
  const std::string held = "docker.io/library/again:1";
  {
    ShimProcess& shim = StartShim();
    CriClient via_shim(shim.Socket());
    ASSERT_TRUE(via_shim.PullImage("again:1", nullptr, nullptr, kPull).ok())
        << TailLines(shim.Log());
  }
  TearDown();  // the shim stops; containerd runs on
  ShimProcess& shim = StartShim();
  CriClient via_shim(shim.Socket());
  auto listed = Listed(image.image_id, &via_shim);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(Tags(listed[0]), Names{held});
  cri::ListImagesResponse filtered;
  ASSERT_TRUE(via_shim.ListImages("again:1", &filtered, kQuick).ok());
  ASSERT_EQ(filtered.images_size(), 1);
  EXPECT_EQ(filtered.images(0).id(), image.image_id);
  EXPECT_EQ(Tags(filtered.images(0)), Names{held});
  ASSERT_TRUE(via_shim.RemoveImage("again:1", kQuick).ok()) << TailLines(shim.Log());
  EXPECT_TRUE(Listed(image.image_id).empty()) << "still held after the removal by name";
  EXPECT_FALSE(Record(held).has_value());
  EXPECT_FALSE(Record("docker.io/library/again@" + image.manifest_digest).has_value());
  EXPECT_FALSE(Record(image.image_id).has_value());
}

// An image pulled with `imageNames: registry` (held under the registry's name only), then the
// shim restarted with `requested`: kubelet's name still finds it for status, a filtered list
// and a removal, which leaves nothing in containerd.
TEST_F(NamesE2E, AnImageHeldUnderTheRegistrysNameFromBeforeStillServes) {
  TestImage image = PushImage(*registry_, "library/before:1", "before");
  const std::string stored = RegistryName("library/before:1");
  {
    ShimProcess& shim = StartShim({.image_names = "registry"});
    CriClient via_shim(shim.Socket());
    ASSERT_TRUE(via_shim.PullImage("before:1", nullptr, nullptr, kPull).ok())
        << TailLines(shim.Log());
  }
  TearDown();
  ASSERT_FALSE(DirectStatus("before:1").has_value()) << "containerd itself knows kubelet's name";
  ShimProcess& shim = StartShim();  // requested, the default
  CriClient via_shim(shim.Socket());
  auto status = DirectStatus("before:1", &via_shim);
  ASSERT_TRUE(status.has_value()) << TailLines(shim.Log());
  EXPECT_EQ(status->id(), image.image_id);
  EXPECT_EQ(Tags(*status), Names{stored});
  cri::ListImagesResponse filtered;
  ASSERT_TRUE(via_shim.ListImages("before:1", &filtered, kQuick).ok());
  ASSERT_EQ(filtered.images_size(), 1) << TailLines(shim.Log());
  EXPECT_EQ(filtered.images(0).id(), image.image_id);
  EXPECT_EQ(Tags(filtered.images(0)), Names{stored});
  ASSERT_TRUE(via_shim.RemoveImage("before:1", kQuick).ok());
  EXPECT_TRUE(Listed(image.image_id).empty()) << "still held after the removal by name";
  EXPECT_FALSE(Record(stored).has_value());
  cri::ListImagesResponse after;
  ASSERT_TRUE(via_shim.ListImages("before:1", &after, kQuick).ok());
  EXPECT_EQ(after.images_size(), 0);
}

// A reload that switches `imageNames` says which behaviour applies from then on, and pulls
// follow it.
TEST_F(NamesE2E, AReloadThatSwitchesImageNamesSaysSoAndPullsFollowIt) {
  TestImage image = PushImage(*registry_, "library/switch:1", "switch");
  ShimProcess& shim = StartShim();
  CriClient via_shim(shim.Socket());
  const std::string requested_line =
      "image names: pulled images are held under the names kubelet asks for";
  const std::string registry_line = "image names: pulled images stay under the registries' names";
  const std::string changed = "changed by a reload";
  ASSERT_TRUE(LogHas(shim, requested_line)) << TailLines(shim.Log());
  EXPECT_FALSE(LogHas(shim, changed, 1, seconds(0)));

  RewriteConfig({.image_names = "registry"});
  ASSERT_TRUE(LogHas(shim, registry_line)) << TailLines(shim.Log());
  EXPECT_NE(shim.Log().find("(imageNames: registry); " + changed), std::string::npos)
      << TailLines(shim.Log());
  ASSERT_TRUE(via_shim.PullImage("switch:1", nullptr, nullptr, kPull).ok());
  EXPECT_TRUE(DirectStatus(RegistryName("library/switch:1")).has_value());
  EXPECT_FALSE(DirectStatus("switch:1").has_value());

  RewriteConfig({});
  ASSERT_TRUE(LogHas(shim, requested_line, 2)) << TailLines(shim.Log());
  ASSERT_TRUE(via_shim.PullImage("switch:1", nullptr, nullptr, kPull).ok());
  auto found = DirectStatus("switch:1");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->id(), image.image_id);
  // A reload that leaves imageNames as it is says nothing about it.
  RewriteConfig({.pin = {"docker.io/library/switch"}});
  ASSERT_TRUE(LogHas(shim, "config reloaded", 3)) << TailLines(shim.Log());
  EXPECT_TRUE(LogHas(shim, requested_line, 2, seconds(0)));
  EXPECT_FALSE(LogHas(shim, requested_line, 3, std::chrono::milliseconds(300)));
  ASSERT_TRUE(direct_->RemoveImage(image.image_id, kQuick).ok());
}

// `pin` and `imageNames` from the ConfigMap (kube-system/image-cri-shim on the Kubernetes API
// test server), end to end: the pinned image answers pinned in status and lists through the
// shim; a change of the ConfigMap unpins it and switches imageNames, which the log says.
TEST_F(NamesE2E, PinAndImageNamesFromTheConfigMap) {
  TestImage image = PushImage(*registry_, "platform/cmpin:1", "cmpin");
  TempDir pki_dir("names-pki");
  TestPki pki = MakeTestPki(pki_dir.path());
  KubeApiServer api({.cert_path = pki.server_cert, .key_path = pki.server_key, .token = kToken});
  api.SetData({{"registries.yaml", "pin: [docker.io/platform]\n"}});
  api.Start();
  std::string kubeconfig = pki_dir.File("kubeconfig");
  WriteFile(kubeconfig, MakeKubeconfig(api.Url(), pki.ca_pem, kToken), 0600);
  ShimProcess& shim = StartShim({.kubeconfig = kubeconfig});
  CriClient via_shim(shim.Socket());
  ASSERT_TRUE(via_shim.PullImage("platform/cmpin:1", nullptr, nullptr, kPull).ok())
      << TailLines(shim.Log());
  auto pinned = [&](bool expected) {
    auto status = DirectStatus("platform/cmpin:1", &via_shim);
    return status.has_value() && status->pinned() == expected;
  };
  ASSERT_TRUE(WaitUntil([&] { return pinned(true); }, seconds(10))) << TailLines(shim.Log());
  EXPECT_TRUE(LogHas(shim, "source=configmap", 1, seconds(0)));
  auto by_id = DirectStatus(image.image_id, &via_shim);
  ASSERT_TRUE(by_id.has_value());
  EXPECT_TRUE(by_id->pinned());
  auto listed = Listed(image.image_id, &via_shim);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_TRUE(listed[0].pinned());
  cri::ListImagesResponse filtered;
  ASSERT_TRUE(via_shim.ListImages("platform/cmpin:1", &filtered, kQuick).ok());
  ASSERT_EQ(filtered.images_size(), 1);
  EXPECT_TRUE(filtered.images(0).pinned());
  EXPECT_EQ(Tags(filtered.images(0)), Names{"docker.io/platform/cmpin:1"});
  auto direct = DirectStatus("platform/cmpin:1");
  ASSERT_TRUE(direct.has_value());
  EXPECT_FALSE(direct->pinned()) << "containerd itself pinned it";

  api.SetData({{"registries.yaml", "pin: []\nimageNames: registry\n"}});
  EXPECT_TRUE(WaitUntil([&] { return pinned(false); }, seconds(10))) << TailLines(shim.Log());
  EXPECT_TRUE(LogHas(shim, "(imageNames: registry); changed by a reload")) << TailLines(shim.Log());
  TearDown();  // the shim stops before the API server it watches
  ASSERT_TRUE(direct_->RemoveImage(image.image_id, kQuick).ok());
}

// With `imageNames: requested` the name kubelet uses comes before any name the shim remembers
// from a pull under a registry's name, for every call, as containerd alone would answer: status,
// a filtered list and a removal all name the same image. Here kubelet's name was made to hold
// another image after the shim remembered the registry's name (as a direct pull of that name
// would).
TEST_F(NamesE2E, KubeletsNameComesBeforeARememberedRegistryName) {
  TestImage remembered = PushImage(*registry_, "library/memo:1", "memo-old");
  TestImage other = PushImage(*registry_, "library/memo-other:1", "memo-new");
  ASSERT_NE(remembered.image_id, other.image_id);
  ShimProcess& shim = StartShim({.image_names = "registry"});
  CriClient via_shim(shim.Socket());
  ASSERT_TRUE(via_shim.PullImage("memo:1", nullptr, nullptr, kPull).ok());  // remembered
  RewriteConfig({});
  ASSERT_TRUE(LogHas(shim,
                     "(imageNames: requested; the runtime serves containerd's image API); "
                     "changed by a reload"))
      << TailLines(shim.Log());

  // docker.io/library/memo:1 now names the other image in containerd.
  cri::AuthConfig auth = MakeAuth(kUser, kPassword);
  ASSERT_TRUE(direct_->PullImage(RegistryName("library/memo-other:1"), &auth, nullptr, kPull).ok());
  auto source = Record(RegistryName("library/memo-other:1"));
  ASSERT_TRUE(source.has_value());
  records::CreateImageRequest create;
  *create.mutable_image() = *source;
  create.mutable_image()->set_name("docker.io/library/memo:1");
  create.mutable_image()->clear_created_at();
  create.mutable_image()->clear_updated_at();
  records::CreateImageResponse created;
  grpc::Status status =
      direct_->Call("/containerd.services.images.v1.Images/Create", create, &created,
                    {.metadata = {{"containerd-namespace", "k8s.io"}}, .timeout = seconds(20)});
  ASSERT_TRUE(status.ok()) << Describe(status);
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto held = DirectStatus("memo:1");
        return held.has_value() && held->id() == other.image_id;
      },
      seconds(5)));

  auto by_status = DirectStatus("memo:1", &via_shim);
  ASSERT_TRUE(by_status.has_value());
  EXPECT_EQ(by_status->id(), other.image_id);
  cri::ListImagesResponse filtered;
  ASSERT_TRUE(via_shim.ListImages("memo:1", &filtered, kQuick).ok());
  ASSERT_EQ(filtered.images_size(), 1);
  EXPECT_EQ(filtered.images(0).id(), other.image_id)
      << "the filtered list named another image than the status";
  ASSERT_TRUE(via_shim.RemoveImage("memo:1", kQuick).ok());
  EXPECT_TRUE(Listed(other.image_id).empty()) << "the removal by name took another image";
  auto kept = DirectStatus(RegistryName("library/memo:1"));
  ASSERT_TRUE(kept.has_value()) << "the removal by name took the remembered image";
  EXPECT_EQ(kept->id(), remembered.image_id);
  ASSERT_TRUE(direct_->RemoveImage(remembered.image_id, kQuick).ok());
}

// --- The renaming step itself, in this process, against the suite's containerd ---
//
// Concurrent pulls that do not coalesce overlap in ways no client can aim at: pull B must start
// in the few milliseconds between pull A's records and A's decision about them. Here the step
// that re-points and deletes records (names::HoldUnderRequestedName, as the shim runs it after a
// pull) runs on an event loop of the test's own, on records made by a real pull, and "another
// pull in flight" is whatever the test's wanted_elsewhere says, when it says it.
class RenameStepE2E : public NamesE2E {
 protected:
  // Runs the step to its end and returns its outcome.
  names::RenameOutcome Rename(names::RenameJob job) {
    relay::EventLoop loop;
    relay::UpstreamPool pool(loop, containerd_->Socket());
    std::optional<names::RenameOutcome> outcome;
    names::HoldUnderRequestedName(loop, pool, std::move(job),
                                  [&](names::RenameOutcome done) { outcome = std::move(done); });
    auto give_up = std::chrono::steady_clock::now() + seconds(30);
    while (!outcome && std::chrono::steady_clock::now() < give_up) {
      loop.RunOnce(std::chrono::milliseconds(50));
    }
    pool.CloseAll();
    EXPECT_TRUE(outcome.has_value()) << "the renaming step never finished";
    return outcome.value_or(names::RenameOutcome{});
  }

  // The job the shim makes after pulling `repo_tag` from the registry for a pod that asked for
  // `requested`: started at `started`, nothing wanted elsewhere unless the test says so.
  names::RenameJob Job(const std::string& requested, const std::string& repo_tag,
                       const TestImage& image, std::chrono::system_clock::time_point started,
                       names::LeftRecords* left) {
    names::RenameJob job;
    job.requested = *image::ParseReference(requested);
    job.pulled = *image::ParseReference(RegistryName(repo_tag));
    job.registry = registry_->Host();
    job.image_id = image.image_id;
    job.pull_started = started;
    job.status_path = "/runtime.v1.ImageService/ImageStatus";
    job.left = left;
    return job;
  }

  // Pulls the registry's name straight at containerd (the records a pull through the shim
  // makes before its renaming step) and returns when the pull began.
  std::chrono::system_clock::time_point PullRegistryName(const std::string& repo_tag) {
    auto started = std::chrono::system_clock::now();
    cri::AuthConfig auth = MakeAuth(kUser, kPassword);
    grpc::Status status = direct_->PullImage(RegistryName(repo_tag), &auth, nullptr, kPull);
    EXPECT_TRUE(status.ok()) << Describe(status);
    return started;
  }

  static bool Mentions(const std::vector<std::string>& kept, const std::string& text) {
    return std::any_of(kept.begin(), kept.end(),
                       [&](const std::string& k) { return k.find(text) != std::string::npos; });
  }
};

// Pull B of a repository starts after pull A's runtime pull created the registry's records, but
// before A decides about them: A leaves them (B's runtime pull reads them back), and B, finding
// them older than its own start, would take them for records that were there before the shim
// pulled: kept for ever. Handed over with A's start, B deletes them.
TEST_F(RenameStepE2E, RecordsLeftForAPullInFlightAreDeletedByThatPull) {
  TestImage image = PushImage(*registry_, "library/handover:1", "handover");
  const std::string tag_record = RegistryName("library/handover:1");
  const std::string digest_record = RegistryName("library/handover") + "@" + image.manifest_digest;
  names::LeftRecords left;
  auto a_started = PullRegistryName("library/handover:1");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto b_started = std::chrono::system_clock::now();  // B begins after A's records exist
  auto created = Record(tag_record);
  ASSERT_TRUE(created.has_value());

  // A decides while B's runtime pull of the repository is in flight.
  names::RenameJob a = Job("handover:1", "library/handover:1", image, a_started, &left);
  a.wanted_elsewhere = [&](const std::string& name) {
    return image::ParseReference(name)->Name() == RegistryName("library/handover")
               ? names::WantedBy::kBeingPulled
               : names::WantedBy::kNobody;
  };
  names::RenameOutcome by_a = Rename(a);
  ASSERT_TRUE(by_a.ok) << by_a.error;
  EXPECT_TRUE(Mentions(by_a.kept, tag_record + " (another pull of the repository is in flight"))
      << ::testing::PrintToString(by_a.kept);
  EXPECT_TRUE(Record(tag_record).has_value());
  EXPECT_TRUE(Record(digest_record).has_value());
  EXPECT_EQ(left.size(), 2u);

  // The control: a pull that started after the records, with nothing handed over, keeps them as
  // records that were there before it.
  names::LeftRecords nothing_left;
  names::RenameOutcome control =
      Rename(Job("handover:1", "library/handover:1", image, b_started, &nothing_left));
  ASSERT_TRUE(control.ok) << control.error;
  EXPECT_TRUE(Mentions(control.kept, tag_record + " (it was there before this pull)"))
      << ::testing::PrintToString(control.kept);
  EXPECT_TRUE(Record(tag_record).has_value());

  // B, the last of the two, takes over what A left and deletes it.
  names::RenameOutcome by_b =
      Rename(Job("handover:1", "library/handover:1", image, b_started, &left));
  ASSERT_TRUE(by_b.ok) << by_b.error;
  EXPECT_TRUE(by_b.kept.empty()) << ::testing::PrintToString(by_b.kept);
  EXPECT_FALSE(Record(tag_record).has_value()) << "the registry's name stays for ever";
  EXPECT_FALSE(Record(digest_record).has_value());
  EXPECT_EQ(left.size(), 0u);
  auto found = DirectStatus("handover:1");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(Tags(*found), Names{"docker.io/library/handover:1"});
  EXPECT_EQ(Digests(*found), Names{"docker.io/library/handover@" + image.manifest_digest});
  ASSERT_TRUE(direct_->RemoveImage(image.image_id, kQuick).ok());
}

// A pull of the repository starts while the step reads a registry record it is about to delete
// (after the first look found no other pull): the record must stay, or that pull's runtime pull
// fails with NOT_FOUND when it reads the record back.
TEST_F(RenameStepE2E, ARecordIsNotDeletedUnderAPullThatStartedWhileItWasRead) {
  TestImage image = PushImage(*registry_, "library/midread:1", "midread");
  const std::string tag_record = RegistryName("library/midread:1");
  const std::string digest_record = RegistryName("library/midread") + "@" + image.manifest_digest;
  names::LeftRecords left;
  auto started = PullRegistryName("library/midread:1");
  names::RenameJob job = Job("midread:1", "library/midread:1", image, started, &left);
  bool other_pull_started = false;  // by the first look: from then on it is in flight
  job.wanted_elsewhere = [&](const std::string&) {
    if (!other_pull_started) {
      other_pull_started = true;
      return names::WantedBy::kNobody;
    }
    return names::WantedBy::kBeingPulled;
  };
  names::RenameOutcome outcome = Rename(job);
  ASSERT_TRUE(outcome.ok) << outcome.error;
  EXPECT_TRUE(Record(tag_record).has_value()) << "deleted under the pull that started meanwhile";
  EXPECT_TRUE(Record(digest_record).has_value());
  EXPECT_TRUE(Mentions(outcome.kept, tag_record + " (another pull of the repository is in flight"))
      << ::testing::PrintToString(outcome.kept);
  EXPECT_EQ(left.size(), 2u) << "handed over to the pull in flight";
  ASSERT_TRUE(direct_->RemoveImage(image.image_id, kQuick).ok());
}

}  // namespace
}  // namespace shim::testing