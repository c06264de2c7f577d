// Fuzz target: the relay's kubelet side. Arbitrary bytes arrive on a client connection of a real
// RelayServer (src/relay) with the real image-call interceptor (cri::ImageService) in front of a
// fake runtime: an in-process HTTP/2 server on a unix socket that answers pulls, status lookups
// and other calls by the image name (found, absent, failing, reset, or never answering), or a
// runtime socket that does not exist (every call gets UNAVAILABLE). The event loop runs until
// the relay is idle, then the client disconnects and the loop runs until idle again.
//
// Byte 0 of the input picks the mode: bit 0 = runtime absent; bits 1-2: 0 = the rest is raw
// bytes on the socket, 1 = a valid client preface and SETTINGS, then the raw bytes,
// 2 and 3 = the rest is a script for an nghttp2 client session (requests to the CRI methods with
// fuzzed bodies, cancellations, pings, garbage, early disconnects; see RunScript).
//
// Properties: no crash, leak or UB (ASan, UBSan, LSan); the relay settles; after the client is
// gone, its connection is closed, no pull is left in flight and no call to the runtime is left
// open (cancellation reached the runtime).
//
// SHIM_FUZZ_LOG=1 logs the relay at debug level to stderr; SHIM_FUZZ_DUMP=FILE appends every
// byte the client sent to FILE (how the raw seeds were made from script seeds).
#include <nghttp2/nghttp2.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/loader.h"
#include "cri/image_service.h"
#include "cri_image.pb.h"
#include "fuzz_check.h"
#include "fuzz_world.h"
#include "relay/downstream.h"
#include "relay/event_loop.h"
#include "relay/grpc_wire.h"
#include "relay/relay_server.h"
#include "relay/unix_socket.h"

namespace {

using namespace std::chrono_literals;
namespace pb = imagecrishim::cri;
namespace relay = shim::relay;
using relay::GrpcCode;
using relay::Headers;

constexpr int kQuietTurns = 8;    // loop turns without any progress that count as idle
constexpr int kMaxTurns = 20000;  // a relay that is still busy after this many never settles
constexpr size_t kMaxInput = 1 << 20;

uint64_t g_activity = 0;  // bumped by every fake-runtime event: progress the harness can see

uint64_t Fnv(std::string_view text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
  return h;
}

// libnghttp2's views of `headers`, valid while `headers` is unchanged (it copies at submit).
std::vector<nghttp2_nv> ToNv(const Headers& headers) {
  std::vector<nghttp2_nv> nv;
  nv.reserve(headers.size());
  for (const auto& h : headers) {
    nv.push_back(nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(h.name.data())),
                            reinterpret_cast<uint8_t*>(const_cast<char*>(h.value.data())),
                            h.name.size(), h.value.size(), NGHTTP2_NV_FLAG_NONE});
  }
  return nv;
}

std::string Method(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// --- The fake runtime -------------------------------------------------------------------------

class FakeRuntimeStream final : public relay::ServerStream {
 public:
  FakeRuntimeStream(relay::DownstreamConnection& connection, int32_t id, std::string path,
                    int* open)
      : connection_(&connection), id_(id), path_(std::move(path)), open_(open) {
    ++*open_;
  }
  ~FakeRuntimeStream() override {
    if (!closed_) --*open_;
  }

  void OnRequestData(const uint8_t* data, size_t n) override {
    ++g_activity;
    if (connection_ != nullptr) connection_->Consume(id_, n);
    body_.append(reinterpret_cast<const char*>(data), n);
  }

  void OnRequestEnd() override {
    ++g_activity;
    if (answered_ || connection_ == nullptr) return;
    answered_ = true;
    Answer();
  }

  void OnDownstreamClosed(uint32_t) override {
    ++g_activity;
    connection_ = nullptr;
    if (!closed_) --*open_;
    closed_ = true;
  }

  ssize_t ReadResponse(uint8_t* buf, size_t length, uint32_t* data_flags) override {
    size_t n = std::min(length, response_.size() - sent_);
    std::memcpy(buf, response_.data() + sent_, n);
    sent_ += n;
    if (sent_ == response_.size()) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
      connection_->SubmitTrailers(id_, relay::StatusTrailers(GrpcCode::kOk, ""));
    }
    return static_cast<ssize_t>(n);
  }

 private:
  void Fail(GrpcCode code, const std::string& message) {
    connection_->SubmitResponse(id_, relay::TrailersOnly(code, message), true);
  }
  void Ok(std::string message) {
    response_ = relay::FrameMessage(message);
    connection_->SubmitResponse(id_, relay::ResponseHeaders(), false);
  }

  // What the runtime answers depends only on the method and the image name.
  void Answer() {
    std::string method = Method(path_);
    auto message = relay::SingleMessage(body_);
    std::string name;
    if (message && method == "PullImage") {
      pb::PullImageRequest request;
      if (request.ParseFromArray(message->data(), static_cast<int>(message->size()))) {
        name = request.image().image();
      }
    } else if (message && (method == "ImageStatus" || method == "RemoveImage")) {
      pb::ImageStatusRequest request;  // same layout for `image` as RemoveImageRequest
      if (request.ParseFromArray(message->data(), static_cast<int>(message->size()))) {
        name = request.image().image();
      }
    }
    uint64_t h = Fnv(name);
    if (method == "Reset" || (h % 11 == 5 && !name.empty())) {
      connection_->ResetStream(id_, NGHTTP2_INTERNAL_ERROR);  // closes through OnStreamClose
      return;
    }
    if (h % 7 == 3 && !name.empty()) return;  // never answers: only a cancel ends it
    if (method == "PullImage") {
      if (name.starts_with("mirror.example.com/") && h % 2 == 0) {
        return Fail(GrpcCode::kNotFound, "failed to resolve reference: " + name + ": not found");
      }
      if (name.starts_with("backup.example.com:5000/") && h % 3 != 2) {
        return Fail(GrpcCode::kUnknown, h % 3 == 0 ? "unexpected status: 401 Unauthorized"
                                                   : "dial tcp: connect: connection refused");
      }
      if (h % 4 == 0) return Fail(GrpcCode::kUnknown, "invalid reference format");
      pb::PullImageResponse response;
      response.set_image_ref("sha256:" + std::string(64, "0123456789abcdef"[h % 16]));
      return Ok(response.SerializeAsString());
    }
    if (method == "ImageStatus") {
      pb::ImageStatusResponse response;
      if (h % 3 != 1) {
        response.mutable_image()->set_id("sha256:" + std::string(64, 'a'));
        response.mutable_image()->add_repo_tags(name);
        (*response.mutable_info())["info"] = "{}";
      }
      return Ok(response.SerializeAsString());
    }
    if (method == "RemoveImage" || method == "CreateContainer") return Ok("");
    if (method == "ListImages") {
      pb::ListImagesResponse response;
      response.add_images()->set_id("sha256:" + std::string(64, 'b'));
      return Ok(response.SerializeAsString());
    }
    // Anything else: the request message comes back (or the raw body, if not one message).
    return Ok(message ? std::string(*message) : body_);
  }

  relay::DownstreamConnection* connection_;
  int32_t id_;
  std::string path_;
  int* open_;
  std::string body_;
  std::string response_;
  size_t sent_ = 0;
  bool answered_ = false;
  bool closed_ = false;
};

class FakeRuntime {
 public:
  FakeRuntime(relay::EventLoop& loop, const std::string& path) : loop_(loop) {
    auto fd = relay::ListenUnix(path);
    FUZZ_CHECK(fd.ok(), "fake runtime: %s", fd.status().message().c_str());
    listen_fd_ = *fd;
    loop_.Add(listen_fd_, EPOLLIN, [this](uint32_t) { Accept(); });
  }
  int open_streams() const { return open_; }

 private:
  void Accept() {
    while (true) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      ++g_activity;
      auto connection = std::make_unique<relay::DownstreamConnection>(
          loop_, fd, "fake-runtime",
          [this](relay::DownstreamConnection& c, int32_t id, Headers headers, bool end_stream) {
            ++g_activity;
            auto stream = std::make_shared<FakeRuntimeStream>(
                c, id, *relay::FindHeader(headers, ":path"), &open_);
            if (end_stream) stream->OnRequestEnd();
            return stream;
          });
      connection->set_on_closed([this](relay::Http2Connection* c) {
        auto it = std::find_if(connections_.begin(), connections_.end(),
                               [&](const auto& p) { return p.get() == c; });
        if (it == connections_.end()) return;
        auto doomed =
            std::make_shared<std::unique_ptr<relay::DownstreamConnection>>(std::move(*it));
        connections_.erase(it);
        loop_.Defer([doomed] {});
      });
      connections_.push_back(std::move(connection));
    }
  }

  relay::EventLoop& loop_;
  int listen_fd_ = -1;
  int open_ = 0;
  std::vector<std::unique_ptr<relay::DownstreamConnection>> connections_;
};

// --- The shim under test ----------------------------------------------------------------------

const char kConfig[] = R"(address: https://mirror.example.com
auth: "mirror-user:mirror-password"
registries:
  - address: http://backup.example.com:5000/proxy-cache
    auth: "backup-user:backup-password"
  - address: https://quay-mirror.example.com
    prefixes: [quay.io/]
fallbackToOrigin: true
timeout: 1h
)";

struct World {
  std::string dir;
  relay::EventLoop loop;
  std::unique_ptr<FakeRuntime> runtime;
  shim::config::ConfigPtr config;
  std::unique_ptr<shim::cri::ImageService> service;
  // [0]: in front of the fake runtime; [1]: in front of a runtime socket that does not exist.
  std::unique_ptr<relay::RelayServer> relays[2];
  std::string relay_paths[2];
  std::ofstream dump;
};

World* g_world = nullptr;

void RemoveWorldDir() {
  if (g_world != nullptr) std::filesystem::remove_all(g_world->dir);
}

void Init() {
  shim::fuzz::InstallLogger();
  std::string dir = shim::fuzz::MakeScratchDir();
  auto* w = new World;  // lives until exit: libFuzzer never returns from its loop
  g_world = w;
  w->dir = dir;
  std::atexit(RemoveWorldDir);
  w->runtime = std::make_unique<FakeRuntime>(w->loop, w->dir + "/runtime.sock");
  auto loaded = shim::config::ParseConfig(kConfig, "fuzz");
  FUZZ_CHECK(loaded.ok(), "fuzz configuration: %s", loaded.errors[0].c_str());
  w->config = loaded.config;
  w->service = std::make_unique<shim::cri::ImageService>([w] { return w->config; }, nullptr);
  const std::string runtimes[2] = {w->dir + "/runtime.sock", w->dir + "/absent.sock"};
  for (int i = 0; i < 2; ++i) {
    w->relay_paths[i] = w->dir + "/shim" + std::to_string(i) + ".sock";
    auto fd = relay::ListenUnix(w->relay_paths[i]);
    FUZZ_CHECK(fd.ok(), "listen: %s", fd.status().message().c_str());
    w->relays[i] = std::make_unique<relay::RelayServer>(w->loop, runtimes[i], w->service.get());
    w->relays[i]->Serve(*fd);
  }
  if (const char* dump = std::getenv("SHIM_FUZZ_DUMP")) {
    w->dump.open(dump, std::ios::binary | std::ios::app);
  }
}

// --- The client -------------------------------------------------------------------------------

class Client {
 public:
  explicit Client(const std::string& path) {
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(fd_ >= 0, "socket: %s", std::strerror(errno));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    FUZZ_CHECK(connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0, "connect %s: %s",
               path.c_str(), std::strerror(errno));
  }
  ~Client() {
    Close();
    if (session_ != nullptr) nghttp2_session_del(session_);
  }

  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  bool open() const { return fd_ >= 0; }

  void Write(std::string_view bytes) { out_.append(bytes); }

  // An nghttp2 client session whose output goes to the socket and which reads the answers.
  void StartSession() {
    nghttp2_session_callbacks* cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_client_new(&session_, cb, this);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, 1);
  }
  nghttp2_session* session() { return session_; }

  int32_t Request(const Headers& headers, std::string body, bool end_stream) {
    auto nv = ToNv(headers);
    if (end_stream) {
      return nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(), nullptr, nullptr);
    }
    bodies_.push_back(Body{std::move(body), 0});
    nghttp2_data_provider provider{};
    provider.source.ptr = &bodies_.back();
    provider.read_callback = [](nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                                uint32_t* flags, nghttp2_data_source* source, void*) -> ssize_t {
      auto* b = static_cast<Body*>(source->ptr);
      size_t n = std::min(length, b->bytes.size() - b->sent);
      std::memcpy(buf, b->bytes.data() + b->sent, n);
      b->sent += n;
      if (b->sent == b->bytes.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
      return static_cast<ssize_t>(n);
    };
    return nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(), &provider, nullptr);
  }

  // Moves bytes both ways; true if any moved.
  bool Io() {
    if (fd_ < 0) return false;
    bool moved = false;
    if (session_ != nullptr && session_ok_) {
      while (true) {
        const uint8_t* data;
        ssize_t n = nghttp2_session_mem_send(session_, &data);
        if (n <= 0) {
          if (n < 0) session_ok_ = false;
          break;
        }
        out_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
      }
    }
    while (head_ < out_.size()) {
      ssize_t n = send(fd_, out_.data() + head_, out_.size() - head_, MSG_NOSIGNAL);
      if (n <= 0) break;  // full (read first) or the relay hung up
      if (g_world->dump.is_open()) g_world->dump.write(out_.data() + head_, n);
      head_ += static_cast<size_t>(n);
      moved = true;
    }
    uint8_t buf[16384];
    while (true) {
      ssize_t n = recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      moved = true;
      if (session_ != nullptr && session_ok_ &&
          nghttp2_session_mem_recv(session_, buf, static_cast<size_t>(n)) < 0) {
        session_ok_ = false;
      }
    }
    return moved;
  }

 private:
  struct Body {
    std::string bytes;
    size_t sent;
  };
  int fd_ = -1;
  nghttp2_session* session_ = nullptr;
  bool session_ok_ = true;
  std::string out_;
  size_t head_ = 0;
  std::list<Body> bodies_;  // stable addresses for the data providers
};

// Runs the loop (and the client's I/O) until nothing moves for kQuietTurns turns.
void Settle(Client* client) {
  int quiet = 0;
  for (int turn = 0; quiet < kQuietTurns; ++turn) {
    FUZZ_CHECK(turn < kMaxTurns, "the relay did not settle after %d loop turns", kMaxTurns);
    uint64_t before = g_activity;
    g_world->loop.RunOnce(0ms);
    bool moved = client != nullptr && client->Io();
    quiet = moved || g_activity != before ? 0 : quiet + 1;
  }
}

// --- The script mode --------------------------------------------------------------------------

const char* const kPaths[] = {
    "/runtime.v1.ImageService/PullImage",         "/runtime.v1.ImageService/ImageStatus",
    "/runtime.v1.ImageService/RemoveImage",       "/runtime.v1.ImageService/ListImages",
    "/runtime.v1.RuntimeService/CreateContainer", "/runtime.v1alpha2.ImageService/PullImage",
    "/runtime.v1alpha2.ImageService/ImageStatus", "/runtime.v1.RuntimeService/Version",
    "/runtime.v1.ImageService/ImageFsInfo",
    "/runtime.v1.RuntimeService/Reset",  // the fake runtime resets the stream
    "/runtime.v1.RuntimeService/ListContainers",  "",
};

class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}
  bool empty() const { return bytes_.empty(); }
  uint8_t Byte() {
    if (bytes_.empty()) return 0;
    uint8_t b = static_cast<uint8_t>(bytes_.front());
    bytes_.remove_prefix(1);
    return b;
  }
  std::string_view Take(size_t n) {
    n = std::min(n, bytes_.size());
    std::string_view out = bytes_.substr(0, n);
    bytes_.remove_prefix(n);
    return out;
  }

 private:
  std::string_view bytes_;
};

// One op per step: 0-2 a request (path, flags, 2-byte length, body), 3 let the relay settle,
// 4 RST_STREAM of the last request, 5 PING and WINDOW_UPDATE, 6 raw bytes on the socket,
// 7 disconnect now.
void RunScript(Client& client, Reader& in) {
  client.StartSession();
  int32_t last = -1;
  int steps = 0;
  while (!in.empty() && client.open() && ++steps <= 64) {
    uint8_t op = in.Byte();
    switch (op % 8) {
      case 0:
      case 1:
      case 2: {
        std::string path = kPaths[in.Byte() % std::size(kPaths)];
        uint8_t flags = in.Byte();
        size_t length = (size_t{in.Byte()} << 8) | in.Byte();
        std::string_view body = in.Take(length);
        Headers headers = {{":method", "POST"},
                           {":scheme", "http"},
                           {":path", path},
                           {":authority", flags & 8 ? "/run/fuzz/shim.sock" : "localhost"},
                           {"content-type", "application/grpc"},
                           {"te", "trailers"},
                           {"user-agent", "grpc-go/1.58.3"}};
        if (flags & 2) headers.push_back({"grpc-timeout", "2S"});
        if (flags & 16) headers.push_back({"x-fuzz-bin", std::string(body.substr(0, 8))});
        std::string framed = flags & 1 ? std::string(body) : relay::FrameMessage(body);
        last = client.Request(headers, std::move(framed), flags & 4);
        break;
      }
      case 3:
        Settle(&client);
        break;
      case 4:
        if (last > 0) {
          nghttp2_submit_rst_stream(client.session(), NGHTTP2_FLAG_NONE, last, in.Byte() % 14);
        }
        break;
      case 5: {
        nghttp2_submit_ping(client.session(), NGHTTP2_FLAG_NONE, nullptr);
        int32_t increment = (int32_t{in.Byte()} << 8) + 1;
        nghttp2_submit_window_update(client.session(), NGHTTP2_FLAG_NONE, 0, increment);
        break;
      }
      case 6:
        client.Io();
        client.Write(in.Take(in.Byte()));
        break;
      default:
        client.Io();
        client.Close();
        break;
    }
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
  const int which = mode & 1;
  Reader in(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  {
    Client client(w.relay_paths[which]);
    switch ((mode >> 1) & 3) {
      case 0:
        client.Write(in.Take(size));
        break;
      case 1:
        client.Write(std::string_view(NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN));
        client.Write(std::string_view("\0\0\0\4\0\0\0\0\0", 9));  // empty SETTINGS
        client.Write(in.Take(size));
        break;
      default:
        RunScript(client, in);
        break;
    }
    Settle(&client);
  }  // the client disconnects
  Settle(nullptr);
  if (w.dump.is_open()) w.dump.flush();

  FUZZ_CHECK(w.relays[which]->connections() == 0,
             "the relay kept %zu client connection(s) after the client left",
             w.relays[which]->connections());
  FUZZ_CHECK(w.service->pulls_in_flight() == 0,
             "%zu pull(s) still in flight after every caller left", w.service->pulls_in_flight());
  FUZZ_CHECK(w.runtime->open_streams() == 0,
             "%d call(s) to the runtime still open after every caller left",
             w.runtime->open_streams());
  return 0;
}
