// cri-client: a small CRI command-line client (crictl is not packaged here), for the demo and
// for poking at a shim or a runtime by hand. Built on the test harness's CriClient.
//
//   cri-client --socket PATH version [--api v1alpha2]
//   cri-client --socket PATH pull IMAGE [--creds USER:PASS]
//   cri-client --socket PATH status IMAGE        (exit 1 when the image is absent)
//   cri-client --socket PATH list [FILTER]
//   cri-client --socket PATH remove IMAGE
//
// Passwords are never printed.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <string>

#include "cri_client.h"

namespace {

using shim::testing::CallOptions;
using shim::testing::CriClient;
using shim::testing::Describe;
namespace cri = shim::testing::cri;

std::string HumanSize(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char buffer[32];
  snprintf(buffer, sizeof(buffer), unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return buffer;
}

std::string ShortId(const std::string& id) {
  std::string hex = id.rfind("sha256:", 0) == 0 ? id.substr(7) : id;
  return hex.substr(0, 12);
}

int Fail(const std::string& what, const grpc::Status& status) {
  std::cerr << "cri-client: " << what << " failed: " << Describe(status) << "\n";
  return 1;
}

void PrintImage(const cri::Image& image, const std::string& indent) {
  std::cout << indent << "id:      " << image.id() << "\n";
  for (const auto& tag : image.repo_tags()) std::cout << indent << "tag:     " << tag << "\n";
  for (const auto& digest : image.repo_digests()) {
    std::cout << indent << "digest:  " << digest << "\n";
  }
  std::cout << indent << "size:    " << HumanSize(image.size()) << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cri-client: a small CRI client for image-cri-shim and containerd", "cri-client"};
  app.require_subcommand(1);
  std::string socket;
  std::string api = "v1";
  double timeout_seconds = 0;
  app.add_option("-s,--socket", socket, "CRI unix socket (the shim's or the runtime's)")
      ->required();
  app.add_option("--api", api, "CRI API version of the calls")
      ->check(CLI::IsMember({"v1", "v1alpha2"}))
      ->capture_default_str();
  app.add_option("--timeout", timeout_seconds, "Deadline of the call in seconds (0 = none)")
      ->capture_default_str();

  CLI::App* version = app.add_subcommand("version", "Show the runtime's name and CRI version");
  std::string image;
  std::string creds;
  CLI::App* pull = app.add_subcommand("pull", "Pull an image");
  pull->add_option("IMAGE", image, "Image reference, e.g. nginx:latest")->required();
  pull->add_option("--creds", creds, "USER:PASS sent with the pull (split at the first ':')");
  CLI::App* status = app.add_subcommand("status", "Show an image (exit 1 when absent)");
  status->add_option("IMAGE", image, "Image reference or id")->required();
  std::string filter;
  CLI::App* list = app.add_subcommand("list", "List the images");
  list->add_option("FILTER", filter, "Only this image reference");
  CLI::App* remove = app.add_subcommand("remove", "Remove an image");
  remove->add_option("IMAGE", image, "Image reference or id")->required();
  for (CLI::App* sub : {version, pull, status, list, remove}) sub->fallthrough();

  CLI11_PARSE(app, argc, argv);

  CriClient client(socket, api);
  CallOptions options;
  if (timeout_seconds > 0) {
    options.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000));
  }

  if (version->parsed()) {
    cri::VersionResponse answer;
    grpc::Status result = client.Version(api, &answer, options);
    if (!result.ok()) return Fail("version over " + api + " on " + socket, result);
    std::cout << "runtime:      " << answer.runtime_name() << " " << answer.runtime_version()
              << "\nCRI API:      " << answer.runtime_api_version()
              << "\nAPI version:  " << answer.version() << "\n";
    return 0;
  }
  if (pull->parsed()) {
    cri::AuthConfig auth;
    bool with_auth = !creds.empty();
    if (with_auth) {
      size_t colon = creds.find(':');
      if (colon == std::string::npos) {
        std::cerr << "cri-client: --creds must be USER:PASS\n";
        return 2;
      }
      auth = shim::testing::MakeAuth(creds.substr(0, colon), creds.substr(colon + 1));
    }
    std::string image_ref;
    grpc::Status result = client.PullImage(image, with_auth ? &auth : nullptr, &image_ref, options);
    if (!result.ok()) return Fail("pull " + image, result);
    std::cout << "pulled " << image << " -> " << image_ref;
    if (with_auth) std::cout << " (credentials of user " << auth.username() << ")";
    std::cout << "\n";
    return 0;
  }
  if (status->parsed()) {
    cri::ImageStatusResponse answer;
    grpc::Status result = client.ImageStatus(image, &answer, options);
    if (!result.ok()) return Fail("status " + image, result);
    if (!answer.has_image()) {
      std::cout << image << ": absent\n";
      return 1;
    }
    std::cout << image << ": present\n";
    PrintImage(answer.image(), "  ");
    return 0;
  }
  if (list->parsed()) {
    cri::ListImagesResponse answer;
    grpc::Status result = client.ListImages(filter, &answer, options);
    if (!result.ok()) return Fail("list", result);
    printf("%-14s %-10s %s\n", "IMAGE ID", "SIZE", "TAGS / DIGESTS");
    for (const auto& entry : answer.images()) {
      std::string names;
      for (const auto& tag : entry.repo_tags()) names += (names.empty() ? "" : ", ") + tag;
      if (names.empty()) {
        for (const auto& d : entry.repo_digests()) names += (names.empty() ? "" : ", ") + d;
      }
      printf("%-14s %-10s %s\n", ShortId(entry.id()).c_str(), HumanSize(entry.size()).c_str(),
             names.c_str());
    }
    return 0;
  }
  if (remove->parsed()) {
    grpc::Status result = client.RemoveImage(image, options);
    if (!result.ok()) return Fail("remove " + image, result);
    std::cout << "removed " << image << "\n";
    return 0;
  }
  return 2;
}
