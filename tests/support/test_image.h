// Tiny test images (a static busybox, a few MB) built without a daemon by umoci, once per
// process and origin, and pushed to a test Registry with skopeo. Images for different origins
// differ in their config (label org.image-cri-shim.test.origin and env SHIM_TEST_ORIGIN), so
// they have different image IDs: a test tells which registry an image came from by its ID.
// Large images (a random payload layer of a chosen size) are built the same way on request.
// For tests and test tools; call from one thread at a time.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace shim::testing {

class Registry;

struct TestImage {
  std::string origin;      // what the image was built for, e.g. "registry-a.test"
  std::string layout_dir;  // an OCI image layout holding it
  std::string tag;         // its tag inside the layout
  std::string image_id;    // "sha256:<config digest>": what CRI reports as Image.id / image_ref
  // "sha256:<manifest digest>": what CRI reports in RepoDigests (skopeo pushes the manifest
  // unchanged, so the registry serves it under this digest).
  std::string manifest_digest;
  // Images with a payload (see BuildLargeTestImage): that layer's blob digest and size.
  std::string payload_digest = {};
  size_t payload_blob_size = 0;
};

// Builds the image for `origin` (cached per process: later calls return the same image).
// Throws std::runtime_error with the tool's output on failure.
const TestImage& BuildTestImage(const std::string& origin);

// Like BuildTestImage(origin), plus a layer holding /payload: `payload_bytes` of random
// (incompressible) data, so that fetching that blob takes a noticeable time. The payload layer
// is made once per size and shared by every origin. Cached per process like BuildTestImage.
const TestImage& BuildLargeTestImage(const std::string& origin, size_t payload_bytes);

// Pushes the image for `origin` ("" = registry.host_name()) to `registry` as `repo_tag`
// ("library/nginx:latest") with the given credentials ("" user = the registry's own).
// Returns the pushed image. Throws with skopeo's output (credentials masked) on failure.
TestImage PushImage(const Registry& registry, std::string_view repo_tag,
                    const std::string& origin = "", const std::string& username = "",
                    const std::string& password = "");
// Pushes an image built above (e.g. a large one) to `registry` with the registry's credentials.
TestImage PushImage(const Registry& registry, std::string_view repo_tag, const TestImage& image);

}  // namespace shim::testing
