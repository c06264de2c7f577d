// The pure parts of the image-call handling: which calls are intercepted, how a runtime's
// failure is read, the bounded memory of where images were stored, the names an image is held
// under and which of them are pinned, what an answer says about containerd's image API, the
// registry-named records left for other pulls to delete, and prePull's backoff.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "cri/image_locations.h"
#include "cri/image_names.h"
#include "cri/image_records.h"
#include "cri/method.h"
#include "cri/pre_pull.h"
#include "cri/pull_failure.h"
#include "cri/requested_name.h"
#include "relay/unary_call.h"

namespace shim::cri {
namespace {

TEST(MethodPath, InterceptsImageCallsOfBothVersions) {
  struct Case {
    const char* path;
    bool intercepted;
    ImageMethod method;
    const char* version;
  };
  const Case cases[] = {
      {"/runtime.v1.ImageService/PullImage", true, ImageMethod::kPullImage, "v1"},
      {"/runtime.v1alpha2.ImageService/PullImage", true, ImageMethod::kPullImage, "v1alpha2"},
      {"/runtime.v1.ImageService/ImageStatus", true, ImageMethod::kImageStatus, "v1"},
      {"/runtime.v1.ImageService/RemoveImage", true, ImageMethod::kRemoveImage, "v1"},
      {"/runtime.v1alpha2.ImageService/ListImages", true, ImageMethod::kListImages, "v1alpha2"},
      {"/runtime.v1.RuntimeService/CreateContainer", true, ImageMethod::kCreateContainer, "v1"},
      {"/runtime.v1.ImageService/ImageFsInfo", false, {}, ""},
      {"/runtime.v1.RuntimeService/Version", false, {}, ""},
      {"/runtime.v1.ImageService/StreamImages", false, {}, ""},
      {"/runtime.v2.ImageService/PullImage", false, {}, ""},
      {"/other.v1.ImageService/PullImage", false, {}, ""},
      {"/runtime.v1.ImageService/PullImageX", false, {}, ""},
      {"", false, {}, ""},
  };
  for (const auto& c : cases) {
    auto parsed = ParseMethodPath(c.path);
    ASSERT_EQ(parsed.has_value(), c.intercepted) << c.path;
    if (!parsed) continue;
    EXPECT_EQ(parsed->method, c.method) << c.path;
    EXPECT_EQ(parsed->version, c.version) << c.path;
  }
  EXPECT_EQ(ImageServicePath("v1alpha2", "ImageStatus"),
            "/runtime.v1alpha2.ImageService/ImageStatus");
}

TEST(MethodPath, ClassifiesEveryCriPathByVersionAndMethod) {
  auto name = [](std::string_view path) -> std::string {
    std::optional<CriPath> classified = ClassifyPath(path);
    if (!classified) return "not CRI";
    std::string out(ApiVersionName(classified->version));
    out += " ";
    out += classified->method ? CriMethods()[*classified->method].name : "unknown method";
    return out;
  };
  EXPECT_EQ(name("/runtime.v1.RuntimeService/Version"), "v1 RuntimeService/Version");
  EXPECT_EQ(name("/runtime.v1alpha2.ImageService/ImageFsInfo"),
            "v1alpha2 ImageService/ImageFsInfo");
  EXPECT_EQ(name("/runtime.v1.RuntimeService/StreamPodSandboxes"),
            "v1 RuntimeService/StreamPodSandboxes");
  EXPECT_EQ(name("/runtime.v1alpha2.RuntimeService/NoSuchMethod"), "v1alpha2 unknown method");
  EXPECT_EQ(name("/runtime.v1.ImageService/PullImageX"), "v1 unknown method");
  EXPECT_EQ(name("/runtime.v1alpha3.ImageService/PullImage"), "not CRI");
  EXPECT_EQ(name("/runtime.v2.ImageService/PullImage"), "not CRI");
  EXPECT_EQ(name("/grpc.health.v1.Health/Check"), "not CRI");
  EXPECT_EQ(name(""), "not CRI");
}

// One table answers both questions: each intercepted method is a CRI method, listed once.
TEST(MethodPath, EveryInterceptedMethodIsOneCriMethod) {
  for (size_t i = 0; i < kImageMethodCount; ++i) {
    auto method = static_cast<ImageMethod>(i);
    int listed = 0;
    for (const CriMethod& m : CriMethods()) listed += m.intercepted == method ? 1 : 0;
    EXPECT_EQ(listed, 1) << MethodName(method);
    auto parsed = ParseMethodPath("/runtime.v1." + std::string(MethodName(method)));
    ASSERT_TRUE(parsed.has_value()) << MethodName(method);
    EXPECT_EQ(parsed->method, method);
  }
  EXPECT_EQ(MethodName(ImageMethod::kCreateContainer), "RuntimeService/CreateContainer");
  for (size_t i = 1; i < CriMethods().size(); ++i) {
    EXPECT_LT(CriMethods()[i - 1].name, CriMethods()[i].name) << "sorted, no duplicates";
  }
}

// prePull's backoff: doubling from the first retry up to the longest, each within +-20%, so
// that nodes that failed together spread their retries.
TEST(PrePullBackoff, DoublesUpToTheLongestWithJitter) {
  PrePuller::Timing timing;
  timing.first_retry = std::chrono::seconds(5);
  timing.longest_retry = std::chrono::seconds(60);
  auto within = [](std::chrono::milliseconds got, int expected_seconds) {
    return got.count() >= expected_seconds * 800 && got.count() <= expected_seconds * 1200;
  };
  const int expected[] = {5, 10, 20, 40, 60, 60, 60};
  for (int failures = 1; failures <= 7; ++failures) {
    for (int sample = 0; sample < 50; ++sample) {
      auto got = PrePuller::RetryDelay(failures, timing);
      ASSERT_TRUE(within(got, expected[failures - 1]))
          << failures << " failures: " << got.count() << " ms";
    }
  }
  // The jitter is there: not every delay is the same.
  std::set<long long> delays;
  for (int sample = 0; sample < 50; ++sample)
    delays.insert(PrePuller::RetryDelay(3, timing).count());
  EXPECT_GT(delays.size(), 10u);
}

// Messages as containerd 1.6 words them (checked against real registries).
TEST(PullFailure, ReadsContainerdAnswers) {
  struct Case {
    int code;
    const char* message;
    PullFailure expected;
  };
  const Case cases[] = {
      {5,
       "failed to pull and unpack image \"r.test:5000/library/nginx:latest\": failed to resolve "
       "reference \"r.test:5000/library/nginx:latest\": r.test:5000/library/nginx:latest: not "
       "found",
       PullFailure::kImageAbsent},
      {2,
       "failed to resolve reference \"r.test:5000/x:1\": failed to do request: Head "
       "\"https://r.test:5000/v2/x/manifests/1\": dial tcp 127.0.0.1:5000: connect: connection "
       "refused",
       PullFailure::kRegistryDown},
      {2,
       "failed to resolve reference \"r.test:5000/x:1\": pulling from host r.test:5000 failed "
       "with status code [manifests 1]: 401 Unauthorized",
       PullFailure::kAuthRejected},
      {2,
       "failed to do request: Head \"https://r.test:5000/v2/\": x509: certificate signed by "
       "unknown authority",
       PullFailure::kRegistryDown},
      {2, "failed to resolve reference: invalid reference format", PullFailure::kInvalidReference},
      {2, "unexpected status: 503 Service Unavailable", PullFailure::kRegistryDown},
      {14, "", PullFailure::kRegistryDown},
      {2, "failed to unpack image: no space left on device", PullFailure::kOther},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(ClassifyPullFailure(c.code, c.message), c.expected) << c.message;
  }
}

TEST(ImageLocations, RemembersFindsForgetsAndStaysBounded) {
  ImageLocations locations(3);
  locations.Remember("docker.io/library/a:1", "r/library/a:1");
  locations.Remember("docker.io/library/b:1", "r/library/b:1");
  locations.Remember("docker.io/library/c:1", "r/library/c:1");
  EXPECT_EQ(locations.Find("docker.io/library/a:1"), "r/library/a:1");  // a is now freshest
  locations.Remember("docker.io/library/d:1", "r/library/d:1");         // evicts b
  EXPECT_EQ(locations.size(), 3u);
  EXPECT_FALSE(locations.Find("docker.io/library/b:1"));
  EXPECT_TRUE(locations.Find("docker.io/library/a:1"));
  locations.Remember("docker.io/library/a:1", "backup/library/a:1");
  EXPECT_EQ(locations.Find("docker.io/library/a:1"), "backup/library/a:1");
  locations.Forget("docker.io/library/a:1");
  EXPECT_FALSE(locations.Find("docker.io/library/a:1"));
  EXPECT_EQ(locations.size(), 2u);
}

constexpr char kDigest[] =
    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
constexpr char kOther[] = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

image::Reference Parse(const std::string& text) {
  auto reference = image::ParseReference(text);
  EXPECT_TRUE(reference.ok()) << text;
  return *reference;
}

// As containerd's CRI plugin names the records of a pull (getRepoDigestAndTag).
TEST(RecordNames, FollowContainerdForTagDigestAndBoth) {
  RecordNames by_tag = RecordNamesFor(Parse("nginx:latest"), kDigest);
  EXPECT_EQ(by_tag.tag, "docker.io/library/nginx:latest");
  EXPECT_EQ(by_tag.digest, std::string("docker.io/library/nginx@") + kDigest);
  EXPECT_EQ(by_tag.All(), (std::vector<std::string>{by_tag.tag, by_tag.digest}));

  RecordNames untagged = RecordNamesFor(Parse("registry.k8s.io/pause"), kDigest);
  EXPECT_EQ(untagged.tag, "registry.k8s.io/pause:latest");

  // By digest: the requested digest names the record, whatever the manifest's target says
  // (they agree for a manifest digest; an index digest is the target too).
  RecordNames by_digest = RecordNamesFor(Parse(std::string("nginx@") + kOther), kDigest);
  EXPECT_EQ(by_digest.tag, "");
  EXPECT_EQ(by_digest.digest, std::string("docker.io/library/nginx@") + kOther);
  EXPECT_EQ(by_digest.All(), std::vector<std::string>{by_digest.digest});

  // By tag and digest: containerd's CRI (reference.ParseDockerRef) drops the tag, so the
  // digest record alone, without the tag, as after a direct pull.
  RecordNames both = RecordNamesFor(Parse(std::string("quay.io/org/app:1.2@") + kOther), kDigest);
  EXPECT_EQ(both.tag, "");
  EXPECT_EQ(both.digest, std::string("quay.io/org/app@") + kOther);
  EXPECT_EQ(both.All(), std::vector<std::string>{both.digest});
  RecordNames short_name = RecordNamesFor(Parse(std::string("app:1@") + kOther), kDigest);
  EXPECT_EQ(short_name.All(),
            std::vector<std::string>{std::string("docker.io/library/app@") + kOther});

  RecordNames port = RecordNamesFor(Parse("localhost:5000/team/app:v1"), kDigest);
  EXPECT_EQ(port.tag, "localhost:5000/team/app:v1");
  EXPECT_EQ(port.digest, std::string("localhost:5000/team/app@") + kDigest);
}

// The one record that names the reference itself: the tag record, or the digest record with the
// tag dropped, as containerd's CRI resolves the name.
TEST(RecordNames, TheRecordOfTheReferenceItselfDropsATagBesideADigest) {
  EXPECT_EQ(RecordNameOf(Parse("nginx")), "docker.io/library/nginx:latest");
  EXPECT_EQ(RecordNameOf(Parse("localhost:5000/team/app:v1")), "localhost:5000/team/app:v1");
  EXPECT_EQ(RecordNameOf(Parse(std::string("nginx@") + kDigest)),
            std::string("docker.io/library/nginx@") + kDigest);
  EXPECT_EQ(RecordNameOf(Parse(std::string("localhost:5000/team/app:v1@") + kDigest)),
            std::string("localhost:5000/team/app@") + kDigest);
}

TEST(Pin, MatchesWholePathComponentsOfTheRepository) {
  const std::vector<std::string> pin = {"registry.k8s.io/pause/", "registry.company.com/platform/",
                                        "docker.io/library/busybox/"};
  EXPECT_TRUE(IsPinned("registry.k8s.io/pause:3.9", pin));
  EXPECT_TRUE(IsPinned(std::string("registry.k8s.io/pause@") + kDigest, pin));
  EXPECT_TRUE(IsPinned("registry.company.com/platform/agent:1", pin));
  EXPECT_TRUE(IsPinned("registry.company.com/platform/team/agent:1", pin));
  EXPECT_TRUE(IsPinned("busybox:1.36", pin));  // normalised before matching
  EXPECT_FALSE(IsPinned("registry.k8s.io/pause-extra:1", pin));
  EXPECT_FALSE(IsPinned("registry.k8s.io/pausex:1", pin));
  EXPECT_FALSE(IsPinned("registry.company.com/platformer/agent:1", pin));
  EXPECT_FALSE(IsPinned("registry.company.com/other/platform:1", pin));
  EXPECT_FALSE(IsPinned("docker.io/library/nginx:1", pin));
  EXPECT_FALSE(IsPinned("not a name", pin));
  EXPECT_FALSE(IsPinned("registry.k8s.io/pause:3.9", {}));
}

TEST(Pin, MarksAnImageByAnyOfItsNamesOnlyOnce) {
  const std::vector<std::string> pin = {"registry.k8s.io/pause/"};
  imagecrishim::cri::Image by_digest;
  by_digest.add_repo_tags("docker.io/library/other:1");
  by_digest.add_repo_digests(std::string("registry.k8s.io/pause@") + kDigest);
  EXPECT_TRUE(MarkPinned(by_digest, pin));
  EXPECT_TRUE(by_digest.pinned());
  EXPECT_FALSE(MarkPinned(by_digest, pin)) << "already pinned: nothing to re-encode";

  imagecrishim::cri::Image free;
  free.add_repo_tags("docker.io/library/nginx:1");
  EXPECT_FALSE(MarkPinned(free, pin));
  EXPECT_FALSE(free.pinned());

  // The runtime's own pin stays, with or without rules.
  imagecrishim::cri::Image runtime_pinned;
  runtime_pinned.set_pinned(true);
  EXPECT_FALSE(MarkPinned(runtime_pinned, {}));
  EXPECT_TRUE(runtime_pinned.pinned());
}

// Fields the shim does not declare (uid, username) survive the re-encoding a pin needs.
TEST(Pin, KeepsUndeclaredFieldsOfTheImage) {
  // Image{id: "sha256:x", repo_tags: ["registry.k8s.io/pause:3.9"], uid(5): {value: 7},
  // username(6): "nobody"}
  std::string wire;
  imagecrishim::cri::Image image;
  image.set_id("sha256:x");
  image.add_repo_tags("registry.k8s.io/pause:3.9");
  wire = image.SerializeAsString();
  wire += std::string("\x2a\x02\x08\x07", 4);     // field 5, length 2: Int64Value{value: 7}
  wire += std::string("\x32\x06", 2) + "nobody";  // field 6: "nobody"
  imagecrishim::cri::Image parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire));
  ASSERT_TRUE(MarkPinned(parsed, {"registry.k8s.io/pause/"}));
  std::string again = parsed.SerializeAsString();
  EXPECT_NE(again.find(std::string("\x2a\x02\x08\x07", 4)), std::string::npos);
  EXPECT_NE(again.find("nobody"), std::string::npos);
  EXPECT_NE(again.find(std::string("\x40\x01", 2)), std::string::npos);  // pinned(8): true
}

// Only UNIMPLEMENTED says the runtime does not serve containerd's image API; an error of the
// moment (or no answer at all) says nothing, so that a later pull asks again instead of keeping
// registry names for the rest of the shim's life.
TEST(ImageApi, OnlyUnimplementedMeansNotServed) {
  auto answer = [](relay::GrpcCode code, bool answered = true) {
    relay::UnaryResult result;
    result.answered = answered;
    result.code = static_cast<int>(code);
    return result;
  };
  EXPECT_EQ(ImageApiFrom(answer(relay::GrpcCode::kOk)), ImageApi::kServed);
  EXPECT_EQ(ImageApiFrom(answer(relay::GrpcCode::kNotFound)), ImageApi::kServed);
  EXPECT_EQ(ImageApiFrom(answer(relay::GrpcCode::kUnimplemented)), ImageApi::kNotServed);
  for (relay::GrpcCode code :
       {relay::GrpcCode::kUnavailable, relay::GrpcCode::kInternal, relay::GrpcCode::kUnknown,
        relay::GrpcCode::kPermissionDenied, relay::GrpcCode::kUnauthenticated,
        relay::GrpcCode::kDeadlineExceeded, relay::GrpcCode::kResourceExhausted,
        relay::GrpcCode::kCancelled}) {
    EXPECT_EQ(ImageApiFrom(answer(code)), ImageApi::kUnknown) << relay::GrpcCodeName(int(code));
  }
  // Not answered: the shim's own code (the runtime unreachable, a reset).
  EXPECT_EQ(ImageApiFrom(answer(relay::GrpcCode::kUnavailable, false)), ImageApi::kUnknown);
  EXPECT_EQ(ImageApiFrom(answer(relay::GrpcCode::kUnimplemented, false)), ImageApi::kUnknown);
}

// Records left for other pulls: taken by repository, left again with the earliest start, and
// bounded.
TEST(LeftRecords, TakenByRepositoryWithTheEarliestStart) {
  using Clock = std::chrono::system_clock;
  const Clock::time_point t0 = Clock::now();
  const auto t1 = t0 + std::chrono::seconds(1);
  const std::string repo = "r.example.com/library/app";
  LeftRecords left;
  left.Leave({repo + ":1", repo, t1, kDigest});
  left.Leave({repo + "@" + kDigest, repo, t1, kDigest});
  left.Leave({"r.example.com/library/other:1", "r.example.com/library/other", t0, kDigest});
  left.Leave({repo + ":1", repo, t0, kOther});  // left again by a pull that started earlier
  left.Leave({repo + "@" + kDigest, repo, t1 + std::chrono::seconds(1), kDigest});  // later
  EXPECT_EQ(left.size(), 3u);
  auto taken = left.Take(repo);
  ASSERT_EQ(taken.size(), 2u);
  for (const auto& record : taken) {
    EXPECT_EQ(record.repository, repo);
    if (record.name == repo + ":1") {
      EXPECT_EQ(record.since, t0);
      EXPECT_EQ(record.digest, kOther);  // what it named when it was left last
    } else {
      EXPECT_EQ(record.name, repo + "@" + kDigest);
      EXPECT_EQ(record.since, t1);
    }
  }
  EXPECT_TRUE(left.Take(repo).empty()) << "taken once";
  EXPECT_EQ(left.size(), 1u);
  EXPECT_TRUE(left.Take("r.example.com/library/app2").empty()) << "whole names only";

  LeftRecords full;
  auto level = spdlog::get_level();
  spdlog::set_level(spdlog::level::warn);  // one info line per entry dropped
  for (int i = 0; i < 1100; ++i) {
    full.Leave({repo + ":" + std::to_string(i), repo, t0 + std::chrono::seconds(i), kDigest});
  }
  spdlog::set_level(level);
  EXPECT_EQ(full.size(), 1024u);
  auto kept = full.Take(repo);
  EXPECT_EQ(std::count_if(kept.begin(), kept.end(),
                          [&](const auto& r) { return r.since < t0 + std::chrono::seconds(76); }),
            0)
      << "the entries left longest ago go first";
}

}  // namespace
}  // namespace shim::cri
