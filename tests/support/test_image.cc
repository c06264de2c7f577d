#include "test_image.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <stdexcept>
#include <vector>

#include "registry.h"
#include "subprocess.h"
#include "temp_dir.h"
#include "test_util.h"

namespace shim::testing {
namespace {

constexpr char kBaseTag[] = "base";

struct ImageCache {
  std::mutex mu;
  std::unique_ptr<TempDir> dir;  // removed at process exit
  std::string layout;
  std::map<std::string, TestImage> images;
  std::map<std::pair<std::string, size_t>, TestImage> large_images;  // (origin, payload size)
};

ImageCache& Cache() {
  static ImageCache* cache = new ImageCache;  // never destroyed; its dir is removed below
  static struct Cleanup {
    ~Cleanup() { Cache().dir.reset(); }
  } cleanup;
  return *cache;
}

std::string BlobPath(const std::string& layout, const std::string& digest) {
  auto colon = digest.find(':');
  return layout + "/blobs/" + digest.substr(0, colon) + "/" + digest.substr(colon + 1);
}

// The digest of `tag`'s manifest, from the layout's index.json; nullopt when the tag is absent.
std::optional<std::string> ManifestDigest(const std::string& layout, const std::string& tag) {
  auto index = nlohmann::json::parse(ReadFile(layout + "/index.json"));
  if (!index.at("manifests").is_array()) return std::nullopt;  // null in a fresh layout
  for (const auto& manifest : index.at("manifests")) {
    auto annotations = manifest.value("annotations", nlohmann::json::object());
    if (annotations.value("org.opencontainers.image.ref.name", "") == tag) {
      return manifest.at("digest").get<std::string>();
    }
  }
  return std::nullopt;
}

// The manifest of `tag` in the layout.
nlohmann::json Manifest(const std::string& layout, const std::string& tag) {
  auto digest = ManifestDigest(layout, tag);
  if (!digest) throw std::runtime_error("tag " + tag + " not found in " + layout + "/index.json");
  return nlohmann::json::parse(ReadFile(BlobPath(layout, *digest)));
}

// The config digest of `tag` in the layout.
std::string ConfigDigest(const std::string& layout, const std::string& tag) {
  return Manifest(layout, tag).at("config").at("digest").get<std::string>();
}

// One layer for every origin: /bin/busybox with /bin/sh -> busybox.
void BuildBase(ImageCache& cache) {
  cache.dir = std::make_unique<TempDir>("shim-img");
  // Readable by the unprivileged user skopeo runs as (see PushImage); test images hold nothing
  // secret.
  std::filesystem::permissions(cache.dir->path(), std::filesystem::perms(0755));
  cache.layout = cache.dir->File("oci");
  std::string bundle = cache.dir->File("bundle");
  std::string image = cache.layout + ":" + kBaseTag;
  RunOrThrow({"umoci", "init", "--layout", cache.layout});
  RunOrThrow({"umoci", "new", "--image", image});
  RunOrThrow({"umoci", "unpack", "--image", image, bundle});
  std::string rootfs = bundle + "/rootfs";
  std::filesystem::create_directories(rootfs + "/bin");
  std::filesystem::copy_file("/bin/busybox", rootfs + "/bin/busybox",
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::create_symlink("busybox", rootfs + "/bin/sh");
  RunOrThrow({"umoci", "repack", "--image", image, bundle});
  std::filesystem::remove_all(bundle);
}

// umoci writes some files 0600; skopeo runs unprivileged (see PushImage) and must read them.
void MakeWorldReadable(const std::string& dir) {
  namespace fs = std::filesystem;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    auto perms = fs::perms::group_read | fs::perms::others_read;
    if (entry.is_directory()) perms |= fs::perms::group_exec | fs::perms::others_exec;
    fs::permissions(entry.path(), perms, fs::perm_options::add);
  }
}

// Tags `from` (a tag of the layout) as a new image whose config names `origin`.
TestImage TagForOrigin(ImageCache& cache, const std::string& from, const std::string& origin) {
  std::string tag = "origin-" + std::to_string(cache.images.size() + cache.large_images.size());
  RunOrThrow({"umoci", "config", "--image", cache.layout + ":" + from, "--tag", tag, "--config.cmd",
              "/bin/sh", "--config.env", "SHIM_TEST_ORIGIN=" + origin, "--config.label",
              "org.image-cri-shim.test.origin=" + origin});
  TestImage image{.origin = origin,
                  .layout_dir = cache.layout,
                  .tag = tag,
                  .image_id = ConfigDigest(cache.layout, tag),
                  .manifest_digest = *ManifestDigest(cache.layout, tag)};
  MakeWorldReadable(cache.layout);
  return image;
}

// The base plus a layer with /payload of `bytes` random bytes, tagged "payload-<bytes>".
std::string BuildPayloadBase(ImageCache& cache, size_t bytes) {
  std::string tag = "payload-" + std::to_string(bytes);
  if (ManifestDigest(cache.layout, tag)) return tag;  // made for another origin already
  std::string bundle = cache.dir->File("payload-bundle");
  RunOrThrow({"umoci", "unpack", "--image", cache.layout + ":" + kBaseTag, bundle});
  {
    std::ofstream out(bundle + "/rootfs/payload", std::ios::binary);
    std::mt19937_64 random(std::random_device{}());
    std::vector<uint64_t> chunk(1 << 16);
    for (size_t written = 0; written < bytes;) {
      for (auto& word : chunk) word = random();
      size_t n = std::min(bytes - written, chunk.size() * sizeof(uint64_t));
      out.write(reinterpret_cast<const char*>(chunk.data()), static_cast<std::streamsize>(n));
      written += n;
    }
    if (!out) throw std::runtime_error("cannot write " + bundle + "/rootfs/payload");
  }
  RunOrThrow({"umoci", "repack", "--image", cache.layout + ":" + tag, bundle});
  std::filesystem::remove_all(bundle);
  return tag;
}

// skopeo copy of `image` to `registry` as `repo_tag`, with `user` ("" = anonymous).
void Push(const Registry& registry, std::string_view repo_tag, const TestImage& image,
          const std::string& user, const std::string& pass) {
  // skopeo run as root keeps a blob-info cache in /var/lib/containers/cache, creating it on the
  // machine; as an unprivileged user with no home it keeps the cache in memory only.
  std::vector<std::string> argv;
  if (geteuid() == 0) {
    argv = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
  }
  argv.insert(argv.end(), {"skopeo", "copy", "--quiet"});
  if (!user.empty()) {
    argv.push_back("--dest-creds");
    argv.push_back(user + ":" + pass);
  }
  argv.push_back("oci:" + image.layout_dir + ":" + image.tag);
  argv.push_back("docker://" + registry.ImageName(repo_tag));
  RunOrThrow(argv, {{"HOME", "/nonexistent"}, {"XDG_RUNTIME_DIR", "/nonexistent"}});
}

}  // namespace

const TestImage& BuildTestImage(const std::string& origin) {
  ImageCache& cache = Cache();
  std::lock_guard lock(cache.mu);
  if (auto it = cache.images.find(origin); it != cache.images.end()) return it->second;
  if (!cache.dir) BuildBase(cache);
  TestImage image = TagForOrigin(cache, kBaseTag, origin);
  return cache.images.emplace(origin, std::move(image)).first->second;
}

const TestImage& BuildLargeTestImage(const std::string& origin, size_t payload_bytes) {
  ImageCache& cache = Cache();
  std::lock_guard lock(cache.mu);
  auto key = std::make_pair(origin, payload_bytes);
  if (auto it = cache.large_images.find(key); it != cache.large_images.end()) return it->second;
  if (!cache.dir) BuildBase(cache);
  std::string base = BuildPayloadBase(cache, payload_bytes);
  TestImage image = TagForOrigin(cache, base, origin);
  nlohmann::json payload = Manifest(cache.layout, image.tag).at("layers").back();
  image.payload_digest = payload.at("digest").get<std::string>();
  image.payload_blob_size = payload.at("size").get<size_t>();
  return cache.large_images.emplace(key, std::move(image)).first->second;
}

TestImage PushImage(const Registry& registry, std::string_view repo_tag, const std::string& origin,
                    const std::string& username, const std::string& password) {
  const TestImage& image = BuildTestImage(origin.empty() ? registry.host_name() : origin);
  std::string user = username.empty() ? registry.username() : username;
  std::string pass = username.empty() ? registry.password() : password;
  Push(registry, repo_tag, image, user, pass);
  return image;
}

TestImage PushImage(const Registry& registry, std::string_view repo_tag, const TestImage& image) {
  Push(registry, repo_tag, image, registry.username(), registry.password());
  return image;
}

}  // namespace shim::testing
