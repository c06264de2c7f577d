// The metrics' labels as dashboards and alerts know them: which method and version a :path is
// counted under, and which calls get a latency histogram.
#include "daemon/metrics.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace shim::daemon {
namespace {

using std::chrono::milliseconds;

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

void Call(Metrics& metrics, std::string_view path, int grpc_code) {
  metrics.OnCallFinished(metrics.MethodId(path), grpc_code, milliseconds(20));
}

TEST(Metrics, CallsAreCountedByVersionMethodAndCode) {
  Metrics metrics;
  Call(metrics, "/runtime.v1.ImageService/PullImage", 0);
  Call(metrics, "/runtime.v1.ImageService/PullImage", 0);
  Call(metrics, "/runtime.v1alpha2.RuntimeService/Version", 0);
  Call(metrics, "/runtime.v1.RuntimeService/StreamContainers", 14);
  Call(metrics, "/runtime.v1.ImageService/ImageFsInfo", relay::CallObserver::kCallReset);
  std::string text = metrics.Render();
  EXPECT_TRUE(Contains(text,
                       "image_cri_shim_calls_total{version=\"v1\",method=\"ImageService/"
                       "PullImage\",code=\"OK\"} 2\n"))
      << text;
  EXPECT_TRUE(Contains(text,
                       "image_cri_shim_calls_total{version=\"v1alpha2\",method=\"RuntimeService/"
                       "Version\",code=\"OK\"} 1\n"));
  EXPECT_TRUE(Contains(text,
                       "image_cri_shim_calls_total{version=\"v1\",method=\"RuntimeService/"
                       "StreamContainers\",code=\"UNAVAILABLE\"} 1\n"));
  EXPECT_TRUE(Contains(text,
                       "image_cri_shim_calls_total{version=\"v1\",method=\"ImageService/"
                       "ImageFsInfo\",code=\"RESET\"} 1\n"));
}

// Unknown methods keep their version; paths outside the CRI count as v1 "other". The label
// never carries the path itself, whatever a client sends.
TEST(Metrics, AnythingElseIsOther) {
  Metrics metrics;
  Call(metrics, "/runtime.v1alpha2.RuntimeService/NoSuchMethod", 12);
  Call(metrics, "/runtime.v9.ImageService/PullImage", 12);
  Call(metrics, "/grpc.health.v1.Health/Check", 12);
  Call(metrics, "", 12);
  std::string text = metrics.Render();
  EXPECT_TRUE(Contains(
      text,
      "image_cri_shim_calls_total{version=\"v1alpha2\",method=\"other\",code=\"UNIMPLEMENTED\"} "
      "1\n"))
      << text;
  EXPECT_TRUE(Contains(
      text,
      "image_cri_shim_calls_total{version=\"v1\",method=\"other\",code=\"UNIMPLEMENTED\"} 3\n"));
  EXPECT_FALSE(Contains(text, "NoSuchMethod"));
  EXPECT_FALSE(Contains(text, "Health"));
}

// The five calls the shim answers itself have a histogram each, over both versions; relayed
// calls have none.
TEST(Metrics, InterceptedCallsHaveALatencyHistogram) {
  Metrics metrics;
  Call(metrics, "/runtime.v1.ImageService/PullImage", 0);
  Call(metrics, "/runtime.v1alpha2.ImageService/PullImage", 5);
  Call(metrics, "/runtime.v1.RuntimeService/CreateContainer", 0);
  Call(metrics, "/runtime.v1.RuntimeService/Version", 0);
  std::string text = metrics.Render();
  EXPECT_TRUE(Contains(text,
                       "image_cri_shim_image_call_duration_seconds_count{method=\"ImageService/"
                       "PullImage\"} 2\n"))
      << text;
  EXPECT_TRUE(Contains(text,
                       "image_cri_shim_image_call_duration_seconds_bucket{method=\"ImageService/"
                       "PullImage\",le=\"0.05\"} 2\n"));
  EXPECT_TRUE(Contains(text,
                       "image_cri_shim_image_call_duration_seconds_bucket{method=\"ImageService/"
                       "PullImage\",le=\"0.01\"} 0\n"));
  EXPECT_TRUE(Contains(text,
                       "image_cri_shim_image_call_duration_seconds_count{method=\"RuntimeService/"
                       "CreateContainer\"} 1\n"));
  for (const char* method :
       {"ImageService/ImageStatus", "ImageService/RemoveImage", "ImageService/ListImages"}) {
    EXPECT_TRUE(Contains(text, "image_cri_shim_image_call_duration_seconds_count{method=\"" +
                                   std::string(method) + "\"} 0\n"))
        << method;
  }
  EXPECT_FALSE(Contains(text, "duration_seconds_count{method=\"RuntimeService/Version\"}"));
}

// Registry addresses come from the operator's configuration: whatever they hold, the line
// stays one valid sample.
TEST(Metrics, PullLabelsAreEscaped) {
  Metrics metrics;
  metrics.OnPullResult("https://r.example/\"odd\"", "ok");
  EXPECT_TRUE(Contains(
      metrics.Render(),
      "image_cri_shim_pulls_total{registry=\"https://r.example/\\\"odd\\\"\",result=\"ok\"} 1\n"))
      << metrics.Render();
}

}  // namespace
}  // namespace shim::daemon
