// A real containerd (Debian's 1.6) for end-to-end tests, on private paths only: its own root,
// state, temp, gRPC and ttrpc sockets and runc's state under a temporary directory, no debug or
// metrics listener, the `native` snapshotter for CRI, CNI dirs inside the directory, plugins that
// cannot work here disabled. Pod sandboxes with host networking and their containers run (runc;
// `restrict_oom_score_adj`, as lowering oom_score_adj is not permitted here); a test that starts
// them must stop and remove them before containerd stops, or their shims outlive it. It never
// touches a containerd the machine may run. Stop/Start keep the same root, so a restart keeps the
// images. Start it inside tests/e2e/sandbox.sh: containerd reads the trust store once at start, and
// the test CA must be in it by then. For tests and test tools; one owner thread.
#pragma once

#include <memory>
#include <string>

#include "subprocess.h"
#include "temp_dir.h"

namespace shim::testing {

struct ContainerdOptions {
  std::string log_level = "info";  // containerd's --log-level
  // Disables containerd's image gRPC service (io.containerd.grpc.v1.images) while CRI keeps
  // working: the socket then answers like CRI-O or cri-dockerd, which do not serve it.
  bool without_image_api = false;
  // The CRI plugin's sandbox (pause) image, e.g. a test registry's image: "" = containerd's
  // default (registry.k8s.io), which tests must never reach. RunPodSandbox pulls it without
  // credentials when it is missing, so pull it first yourself (directly, with credentials).
  std::string sandbox_image = "";
};

class Containerd {
 public:
  // Writes the config and Start()s. Throws std::runtime_error with the log on failure.
  explicit Containerd(ContainerdOptions options = {});
  ~Containerd();
  Containerd(const Containerd&) = delete;
  Containerd& operator=(const Containerd&) = delete;

  // Starts and waits (up to 60 s) until the socket answers a CRI v1 Version call.
  void Start();
  // SIGTERM, then SIGKILL after 10 s.
  void Stop();
  void Restart();
  bool Running();

  const std::string& Socket() const { return socket_; }  // the gRPC socket (CRI lives here)
  std::string config_path() const { return dir_->File("config.toml"); }
  const std::string& dir() const { return dir_->path(); }
  std::string LogText() const;

 private:
  ContainerdOptions options_;
  std::unique_ptr<TempDir> dir_;
  std::string socket_;
  std::unique_ptr<Subprocess> process_;
};

// The config.toml the harness uses, for a containerd whose every path is under `dir` (exposed
// so the demo and the report can show it).
std::string ContainerdConfig(const std::string& dir, const ContainerdOptions& options = {});

}  // namespace shim::testing
