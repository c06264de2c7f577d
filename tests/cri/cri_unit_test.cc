// The pure parts of the image-call handling: which calls are intercepted, how a runtime's
// failure is read, and the bounded memory of where images were stored.
#include <gtest/gtest.h>

#include "cri/image_locations.h"
#include "cri/method.h"
#include "cri/pull_failure.h"

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

}  // namespace
}  // namespace shim::cri
