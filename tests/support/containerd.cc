#include "containerd.h"

#include <sstream>
#include <stdexcept>

#include "cri_client.h"
#include "test_util.h"

namespace shim::testing {

std::string ContainerdConfig(const std::string& dir, const ContainerdOptions& options) {
  std::ostringstream c;
  c << "version = 2\n"
    << "root = \"" << dir << "/root\"\n"
    << "state = \"" << dir << "/state\"\n"
    << "temp = \"" << dir << "/tmp\"\n"
    << "plugin_dir = \"\"\n"
    // Snapshotters that need kernel features or tools absent here, the /opt installer
    // (writes /opt/containerd) and tracing: failing or machine-touching, none needed.
    << "disabled_plugins = [\n"
    << "  \"io.containerd.snapshotter.v1.aufs\",\n"
    << "  \"io.containerd.snapshotter.v1.btrfs\",\n"
    << "  \"io.containerd.snapshotter.v1.devmapper\",\n"
    << "  \"io.containerd.snapshotter.v1.zfs\",\n"
    << "  \"io.containerd.internal.v1.opt\",\n"
    << "  \"io.containerd.tracing.processor.v1.otlp\",\n"
    << "  \"io.containerd.internal.v1.tracing\",\n"
    << (options.without_image_api ? "  \"io.containerd.grpc.v1.images\",\n" : "") << "]\n"
    << "\n[grpc]\n"
    << "  address = \"" << dir << "/containerd.sock\"\n"
    << "  uid = 0\n"
    << "  gid = 0\n"
    << "  tcp_address = \"\"\n"
    << "\n[ttrpc]\n"
    << "  address = \"" << dir << "/containerd.sock.ttrpc\"\n"
    << "\n[debug]\n"
    << "  address = \"\"\n"
    << "\n[metrics]\n"
    << "  address = \"\"\n"
    << "\n[plugins]\n"
    << "  [plugins.\"io.containerd.grpc.v1.cri\"]\n"
    << "    disable_tcp_service = true\n"
    << "    stream_server_address = \"127.0.0.1\"\n"
    << "    stream_server_port = \"0\"\n"
    // Sandboxes ask runc for oom_score_adj -998, which is not permitted here.
    << "    restrict_oom_score_adj = true\n";
  if (!options.sandbox_image.empty()) {
    c << "    sandbox_image = \"" << options.sandbox_image << "\"\n";
  }
  c << "    [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n"
    << "      snapshotter = \"native\"\n"
    << "      default_runtime_name = \"runc\"\n"
    << "      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n"
    << "        runtime_type = \"io.containerd.runc.v2\"\n"
    // runc's state of this containerd's containers, instead of /run/containerd/runc.
    << "        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n"
    << "          Root = \"" << dir << "/runc\"\n"
    << "    [plugins.\"io.containerd.grpc.v1.cri\".cni]\n"
    << "      bin_dir = \"" << dir << "/cni/bin\"\n"
    << "      conf_dir = \"" << dir << "/cni/conf\"\n"
    << "    [plugins.\"io.containerd.grpc.v1.cri\".registry]\n"
    << "      config_path = \"" << dir << "/certs.d\"\n";
  return c.str();
}

Containerd::Containerd(ContainerdOptions options) : options_(std::move(options)) {
  dir_ = std::make_unique<TempDir>("shim-ctd");
  socket_ = dir_->File("containerd.sock");
  for (const char* sub : {"root", "state", "tmp", "runc", "cni/bin", "cni/conf", "certs.d"}) {
    dir_->MakeDir(sub);
  }
  WriteFile(config_path(), ContainerdConfig(dir_->path(), options_));
  process_ = std::make_unique<Subprocess>(SubprocessOptions{
      .argv = {"containerd", "--config", config_path(), "--log-level", options_.log_level},
      .env = {},
      .log_path = dir_->File("containerd.log"),
      .working_dir = dir_->path()});
  Start();
}

Containerd::~Containerd() {
  Stop();
}

void Containerd::Start() {
  process_->Start();
  std::string last_error = "no answer";
  bool up = WaitUntil(
      [&] {
        if (!process_->Running()) return true;
        if (!UnixSocketAccepts(socket_)) return false;
        CriClient client(socket_);
        cri::VersionResponse version;
        CallOptions call;
        call.timeout = std::chrono::seconds(2);
        grpc::Status status = client.Version("v1", &version, call);
        if (!status.ok()) last_error = status.error_message();
        return status.ok();
      },
      std::chrono::seconds(60), std::chrono::milliseconds(100));
  if (!process_->Running() || !up) {
    std::string why = process_->Running() ? "CRI Version did not answer within 60 s: " + last_error
                                          : process_->last_exit()->ToString();
    Stop();
    throw std::runtime_error("containerd on " + socket_ + " did not come up (" + why + "):\n" +
                             TailLines(LogText()));
  }
}

void Containerd::Stop() {
  if (process_) process_->Stop(std::chrono::seconds(10));
}

void Containerd::Restart() {
  Stop();
  Start();
}

bool Containerd::Running() {
  return process_ && process_->Running();
}

std::string Containerd::LogText() const {
  return process_ ? process_->LogText() : "";
}

}  // namespace shim::testing
