// shim-demo: the `make demo` walk-through (scripts/demo.sh runs it inside tests/e2e/sandbox.sh).
// Starts a private registry holding a small image as library/nginx:latest, a private
// containerd, and image-cri-shim in front of it; pulls `nginx:latest` through the shim with
// cri-client and shows where the image came from and that the runtime holds it. Everything is
// started with the end-to-end harness (one implementation for the tests and the demo) and torn
// down when it ends, also on failure.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>

#include "containerd.h"
#include "cri_client.h"
#include "registry.h"
#include "shim_process.h"
#include "subprocess.h"
#include "temp_dir.h"
#include "test_ca.h"
#include "test_image.h"
#include "test_util.h"

namespace {

using namespace shim::testing;

void Step(const std::string& text) {
  std::cout << "\n==> " << text << "\n" << std::flush;
}
void Note(const std::string& text) {
  std::cout << "    " << text << "\n" << std::flush;
}

std::string Indent(const std::string& text) {
  std::string out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    out += "    " + text.substr(start, end - start) + "\n";
    start = end + 1;
  }
  return out;
}

// Runs and shows a command the way a user would type it; returns its exit code.
int Show(const std::vector<std::string>& argv) {
  std::cout << "$ " << FormatCommandLine(argv) << "\n" << std::flush;
  CommandResult result = RunCommand(argv, {}, std::chrono::minutes(5));
  std::cout << Indent(result.output) << std::flush;
  if (!result.status.Success()) std::cout << "    (" << result.status.ToString() << ")\n";
  return result.status.code;
}

std::string SelfDir() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "." : self.parent_path().string();
}

std::string RandomSecret() {
  std::random_device random;
  std::string hex = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 16; ++i) out += hex[random() % 16];
  return out;
}

int RunDemo(const std::string& shim_binary, const std::string& cri_client) {
  if (!TestCa::Available()) {
    std::cerr << "shim-demo: run me under tests/e2e/sandbox.sh (it makes the test host names "
                 "resolve and the test CA trusted in a private mount namespace)\n";
    return 2;
  }
  const std::string user = "demo";
  const std::string password = RandomSecret();

  Step("Starting a private registry (docker-registry, TLS from a test CA, htpasswd login)");
  Registry registry({.host_name = "registry-a.test", .username = user, .password = password});
  Note("registry:    " + registry.Address() + "  (user " + user + ", password ****)");
  Note("anonymous GET /v2/ -> HTTP " + std::to_string(registry.HttpGet("/v2/")));

  Step("Pushing a small test image (static busybox, built with umoci) as library/nginx:latest");
  TestImage image = PushImage(registry, "library/nginx:latest");
  Note("pushed:      " + registry.ImageName("library/nginx:latest"));
  Note("image id:    " + image.image_id);

  Step("Starting containerd with its own root, state and socket");
  Containerd containerd;
  Note("containerd:  " + containerd.Socket());
  Note("config:      " + containerd.config_path());
  Show({cri_client, "--socket", containerd.Socket(), "version"});

  Step("Writing the shim's configuration");
  TempDir dir("shim-demo");
  std::string shim_socket = dir.File("shim.sock");
  std::string config_path = dir.File("image-cri-shim.yaml");
  auto config = [&](const std::string& secret) {
    return "shim: " + shim_socket + "\ncri: " + containerd.Socket() +
           "\naddress: " + registry.Address() + "\nauth: " + user + ":" + secret +
           "\nconfigMap:\n  enabled: false\n";
  };
  WriteFile(config_path, config(password), 0600);
  Note(config_path + " (password masked here):");
  std::cout << Indent(config("****"));

  Step("Starting image-cri-shim in front of containerd");
  Note("binary:      " + shim_binary);
  ShimProcess shim({.config_path = config_path, .socket_path = shim_socket, .binary = shim_binary});
  try {
    shim.Start();
  } catch (const std::exception& e) {
    std::cout << "\nshim-demo: the shim did not start, so the demo stops here.\n"
              << Indent(e.what()) << std::flush;
    return 1;
  }
  Note("shim:        " + shim_socket + " -> " + containerd.Socket());

  Step("Pulling nginx:latest through the shim, as kubelet would (no credentials sent)");
  int pulled = Show({cri_client, "--socket", shim_socket, "pull", "nginx:latest"});

  Step("Where the shim sends nginx:latest");
  Show({shim_binary, "--file", config_path, "rewrite", "nginx:latest"});

  Step("Image status through the shim, under the name kubelet uses");
  int status = Show({cri_client, "--socket", shim_socket, "status", "nginx:latest"});

  Step("Images in containerd itself (directly on its socket)");
  Show({cri_client, "--socket", containerd.Socket(), "list"});

  std::string stored = registry.ImageName("library/nginx:latest");
  cri::ImageStatusResponse answer;
  CriClient direct(containerd.Socket());
  bool held = direct.ImageStatus(stored, &answer).ok() && answer.has_image() &&
              answer.image().id() == image.image_id;
  int manifests = registry.CountRequests("GET", "/v2/library/nginx/manifests/latest", 200) +
                  registry.CountRequests("HEAD", "/v2/library/nginx/manifests/latest", 200);

  Step("Result");
  if (pulled == 0 && status == 0 && held) {
    Note("OK: nginx:latest was pulled from the private registry with the shim's credentials");
    Note("    and containerd holds it as " + stored);
    Note("    (" + std::to_string(manifests) +
         " authenticated manifest request(s) at the registry)");
  } else {
    Note("FAILED: pull " + std::string(pulled == 0 ? "ok" : "failed") + ", status " +
         (status == 0 ? "present" : "not present") + ", containerd " +
         (held ? "holds " : "does not hold ") + stored);
  }

  Step("Tearing down (shim, containerd, registry, temporary files)");
  ExitStatus shim_exit = shim.Stop();
  Note("image-cri-shim: " + shim_exit.ToString());
  return pulled == 0 && status == 0 && held ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"shim-demo: image-cri-shim in front of a private containerd and registry",
               "shim-demo"};
  std::string shim_binary = ShimBinaryPath();
  std::string cri_client = SelfDir() + "/cri-client";
  app.add_option("--shim", shim_binary, "The image-cri-shim binary")->capture_default_str();
  app.add_option("--cri-client", cri_client, "The cri-client binary")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    int rc = RunDemo(shim_binary, cri_client);
    std::cout << "\n" << (rc == 0 ? "demo finished" : "demo failed") << "\n";
    return rc;
  } catch (const std::exception& e) {
    std::cout << std::flush;
    std::cerr << "\nshim-demo: " << e.what() << "\n";
    return 1;
  }
}
