// Fuzz target: the relay's runtime side. A well-behaved client makes calls through a real
// RelayServer (with the real image-call interceptor, so the shim's own calls to the runtime are
// made too); the runtime's end of the socket is the fuzz input: whatever the relay sends it is
// read and dropped, and the input's bytes are written back in the pieces the input chooses, one
// piece per loop turn. A runtime is trusted, but a broken or restarting one must not bring the
// shim down or leave calls hanging.
//
// Input: byte 0: bit 0 = the runtime starts with a valid SETTINGS frame; bit 1 = the client
// leaves before the runtime is done. Then pieces: a length byte and that many bytes, written
// as one piece.
//
// Properties: no crash, leak or UB (ASan, UBSan, LSan); the relay settles; once the client and
// the runtime are gone, no client connection or pull is left within a bounded number of turns.
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

#include "config/loader.h"
#include "cri/image_service.h"
#include "fuzz_check.h"
#include "fuzz_world.h"
#include "relay/event_loop.h"
#include "relay/grpc_wire.h"
#include "relay/hpack.h"
#include "relay/relay_server.h"
#include "relay/unix_socket.h"

namespace {

using namespace std::chrono_literals;
namespace relay = shim::relay;

constexpr int kQuietTurns = 8;
constexpr int kMaxTurns = 20000;
constexpr size_t kMaxInput = 1 << 16;

uint64_t g_activity = 0;  // bumped whenever a socket of the harness moves bytes

std::string Frame(uint8_t type, uint8_t flags, uint32_t stream_id, std::string_view payload) {
  std::string out;
  size_t n = payload.size();
  for (uint32_t v : {static_cast<uint32_t>(n >> 16), static_cast<uint32_t>(n >> 8),
                     static_cast<uint32_t>(n), uint32_t{type}, uint32_t{flags}, stream_id >> 24,
                     stream_id >> 16, stream_id >> 8, stream_id}) {
    out.push_back(static_cast<char>(v & 0xff));
  }
  return out.append(payload);
}

// Reads and drops whatever is waiting on `fd`; false once the peer closed or failed.
bool Drain(int fd) {
  char buf[16384];
  while (true) {
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      ++g_activity;
      continue;
    }
    return n < 0 && (errno == EAGAIN || errno == EINTR);
  }
}

// The runtime's end: the first connection gets the script, later ones are closed at once.
class ScriptedRuntime {
 public:
  ScriptedRuntime(relay::EventLoop& loop, const std::string& path) : loop_(loop) {
    auto fd = relay::ListenUnix(path);
    FUZZ_CHECK(fd.ok(), "runtime: %s", fd.status().message().c_str());
    listen_fd_ = *fd;
    loop_.Add(listen_fd_, EPOLLIN, [this](uint32_t) { Accept(); });
  }

  void Play(std::string_view script) {
    script_ = script;
    served_ = false;
  }
  // One piece per turn; true while the runtime still has something to do.
  bool Step() {
    if (fd_ < 0) return false;
    if (!Drain(fd_)) {
      Hang();
      return false;
    }
    if (script_.empty()) {
      Hang();  // the runtime goes away: every call left learns it
      return false;
    }
    size_t n = std::min<size_t>(static_cast<uint8_t>(script_.front()), script_.size() - 1);
    std::string_view piece = script_.substr(1, n);
    script_.remove_prefix(1 + n);
    if (!piece.empty() && send(fd_, piece.data(), piece.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
        errno != EAGAIN) {
      Hang();
      return false;
    }
    ++g_activity;
    return true;
  }
  void Hang() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  void Accept() {
    while (true) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      ++g_activity;
      if (served_ || fd_ >= 0) {
        close(fd);
        continue;
      }
      served_ = true;
      fd_ = fd;
    }
  }

  relay::EventLoop& loop_;
  int listen_fd_ = -1;
  int fd_ = -1;
  bool served_ = false;
  std::string_view script_;
};

const char kConfig[] = R"(address: https://mirror.example.com
auth: "mirror-user:mirror-password"
fallbackToOrigin: true
)";

struct World {
  std::string dir;
  relay::EventLoop loop;
  std::unique_ptr<ScriptedRuntime> runtime;
  shim::config::ConfigPtr config;
  std::unique_ptr<shim::cri::ImageService> service;
  std::unique_ptr<relay::RelayServer> relay;
  std::string relay_path;
  std::string requests;  // what the client sends
};

World* g_world = nullptr;

void RemoveWorldDir() {
  if (g_world != nullptr) std::filesystem::remove_all(g_world->dir);
}

std::string Request(uint32_t stream_id, const std::string& path, std::string_view message,
                    bool end) {
  std::string block;
  relay::EncodeHeaderBlock({{":method", "POST"},
                            {":scheme", "http"},
                            {":path", path},
                            {":authority", "localhost"},
                            {"content-type", "application/grpc"},
                            {"te", "trailers"}},
                           block);
  return Frame(0x1, 0x4, stream_id, block) +
         Frame(0x0, end ? 0x1 : 0x0, stream_id, relay::FrameMessage(message));
}

void Init() {
  shim::fuzz::InstallLogger();
  std::string dir = shim::fuzz::MakeScratchDir();
  auto* w = new World;  // lives until exit: libFuzzer never returns from its loop
  g_world = w;
  w->dir = dir;
  std::atexit(RemoveWorldDir);
  w->runtime = std::make_unique<ScriptedRuntime>(w->loop, w->dir + "/runtime.sock");
  auto loaded = shim::config::ParseConfig(kConfig, "fuzz");
  FUZZ_CHECK(loaded.ok(), "fuzz configuration: %s", loaded.errors[0].c_str());
  w->config = loaded.config;
  w->service = std::make_unique<shim::cri::ImageService>([w] { return w->config; }, nullptr);
  w->relay_path = w->dir + "/shim.sock";
  auto fd = relay::ListenUnix(w->relay_path);
  FUZZ_CHECK(fd.ok(), "listen: %s", fd.status().message().c_str());
  w->relay =
      std::make_unique<relay::RelayServer>(w->loop, w->dir + "/runtime.sock", w->service.get());
  w->relay->Serve(*fd);

  // A relayed unary call, an intercepted one (a pull: the shim's own calls to the runtime), a
  // relayed one whose request stays open, and a PING.
  const std::string pull = std::string("\x0a\x07\x0a\x05nginx", 9);  // PullImageRequest
  w->requests = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + Frame(0x4, 0, 0, "") +
                Request(1, "/runtime.v1.RuntimeService/Version", "", true) +
                Request(3, "/runtime.v1.ImageService/PullImage", pull, true) +
                Request(5, "/runtime.v1.RuntimeService/ListContainers", "", false) +
                Frame(0x6, 0, 0, "fuzzping");
}

int Connect(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  FUZZ_CHECK(fd >= 0, "socket: %s", std::strerror(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  FUZZ_CHECK(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0, "connect: %s",
             std::strerror(errno));
  return fd;
}

// Runs the loop until nothing moves for kQuietTurns turns.
void Settle(int client_fd, bool runtime_steps) {
  int quiet = 0;
  for (int turn = 0; quiet < kQuietTurns; ++turn) {
    FUZZ_CHECK(turn < kMaxTurns, "the relay did not settle after %d loop turns", kMaxTurns);
    uint64_t before = g_activity;
    g_world->loop.RunOnce(0ms);
    bool moved = runtime_steps && g_world->runtime->Step();
    if (client_fd >= 0) Drain(client_fd);
    quiet = moved || g_activity != before ? 0 : quiet + 1;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Init();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > kMaxInput) return 0;
  World& w = *g_world;
  const uint8_t mode = data[0];
  std::string script;
  if (mode & 1) script = std::string(1, '\x09') + Frame(0x4, 0, 0, "");  // SETTINGS
  script.append(reinterpret_cast<const char*>(data) + 1, size - 1);
  w.runtime->Play(script);

  int client = Connect(w.relay_path);
  FUZZ_CHECK(send(client, w.requests.data(), w.requests.size(), MSG_NOSIGNAL) ==
                 static_cast<ssize_t>(w.requests.size()),
             "the client's requests did not fit the socket");
  if (mode & 2) {
    Settle(client, false);  // the calls reach the runtime, which has not answered yet
    close(client);
    client = -1;
  }
  Settle(client, true);
  w.runtime->Hang();
  Settle(client, false);
  if (client >= 0) close(client);
  Settle(-1, false);
  // What is left must go within a bounded number of turns (a few milliseconds: timers the
  // relay arms meanwhile, such as a PING's ACK, run too).
  for (int turn = 0; w.relay->connections() > 0 || w.service->pulls_in_flight() > 0; ++turn) {
    FUZZ_CHECK(turn < kMaxTurns,
               "%zu client connection(s) and %zu pull(s) left after the client and the runtime "
               "left",
               w.relay->connections(), w.service->pulls_in_flight());
    w.loop.RunOnce(0ms);
  }
  return 0;
}
