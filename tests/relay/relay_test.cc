// The relay between a real gRPC C++ client and a real gRPC C++ server (the fake runtime), over
// unix sockets: every shape of call, metadata, deadlines, cancellation, large messages, errors,
// a runtime that is down or goes away, and clients that misbehave.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <optional>
#include <thread>
#include <vector>

#include "echo_test.grpc.pb.h"
#include "fake_runtime.h"
#include "relay/event_loop.h"
#include "relay/hpack.h"
#include "relay/relay_server.h"
#include "relay/unix_socket.h"

namespace {

using namespace std::chrono_literals;
using shimtest::EchoMessage;

class RelayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shim-relay-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    runtime_ = std::make_unique<shimtest::FakeRuntime>(dir_ + "/runtime.sock");
    runtime_->Start();
    StartRelay(runtime_->socket_path());
  }

  void StartRelay(const std::string& runtime_socket) {
    auto fd = shim::relay::ListenUnix(dir_ + "/shim.sock");
    ASSERT_TRUE(fd.ok()) << fd.status().message();
    listen_fd_ = *fd;
    server_ = std::make_unique<shim::relay::RelayServer>(loop_, runtime_socket, nullptr);
    server_->Serve(listen_fd_);
    loop_thread_ = std::thread([this] { loop_.Run(); });
  }

  void TearDown() override {
    loop_.Stop();
    if (loop_thread_.joinable()) loop_thread_.join();
    server_.reset();
    if (listen_fd_ >= 0) close(listen_fd_);
    runtime_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::unique_ptr<shimtest::Echo::Stub> Stub() {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(16 << 20);
    args.SetMaxSendMessageSize(16 << 20);
    auto channel = grpc::CreateCustomChannel("unix:" + dir_ + "/shim.sock",
                                             grpc::InsecureChannelCredentials(), args);
    return shimtest::Echo::NewStub(channel);
  }

  static void SetDeadline(grpc::ClientContext& context, std::chrono::milliseconds d) {
    context.set_deadline(std::chrono::system_clock::now() + d);
  }

  // One Unary call of `payload` with a 10 s deadline; the echoed payload goes to `echoed`.
  static grpc::Status UnaryEcho(shimtest::Echo::Stub& stub, const std::string& payload,
                                std::string* echoed = nullptr) {
    grpc::ClientContext context;
    SetDeadline(context, 10s);
    EchoMessage request, reply;
    request.set_payload(payload);
    grpc::Status status = stub.Unary(&context, request, &reply);
    if (echoed != nullptr) *echoed = reply.payload();
    return status;
  }

  std::string dir_;
  std::unique_ptr<shimtest::FakeRuntime> runtime_;
  shim::relay::EventLoop loop_;
  std::unique_ptr<shim::relay::RelayServer> server_;
  int listen_fd_ = -1;
  std::thread loop_thread_;
};

TEST_F(RelayTest, UnaryCarriesMessageAndMetadataBothWays) {
  auto stub = Stub();
  grpc::ClientContext context;
  SetDeadline(context, 10s);
  context.AddMetadata("x-test-meta", "hello");
  EchoMessage request, reply;
  request.set_payload("ping");
  grpc::Status status = stub->Unary(&context, request, &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(reply.payload(), "ping");
  EXPECT_EQ(runtime_->counters().last_metadata_seen.load(), 1);
  auto initial = context.GetServerInitialMetadata();
  auto it = initial.find("x-echo-meta");
  ASSERT_NE(it, initial.end());
  EXPECT_EQ(std::string(it->second.data(), it->second.size()), "hello");
  auto trailing = context.GetServerTrailingMetadata();
  auto t = trailing.find("x-trailer");
  ASSERT_NE(t, trailing.end());
  EXPECT_EQ(std::string(t->second.data(), t->second.size()), "done");
}

TEST_F(RelayTest, ServerStreamingDeliversEveryMessageInOrder) {
  auto stub = Stub();
  grpc::ClientContext context;
  SetDeadline(context, 20s);
  EchoMessage request;
  request.set_count(500);
  request.set_answer_bytes(1000);
  auto reader = stub->ServerStream(&context, request);
  EchoMessage m;
  int n = 0;
  while (reader->Read(&m)) {
    EXPECT_EQ(m.count(), n);
    EXPECT_EQ(m.payload().size(), 1000u);
    ++n;
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(n, 500);
}

TEST_F(RelayTest, BidiStreamingEchoesEachMessage) {
  auto stub = Stub();
  grpc::ClientContext context;
  SetDeadline(context, 20s);
  auto stream = stub->Bidi(&context);
  for (int i = 0; i < 50; ++i) {
    EchoMessage out, in;
    out.set_count(i);
    out.set_payload(std::string(i * 100, 'b'));
    ASSERT_TRUE(stream->Write(out));
    ASSERT_TRUE(stream->Read(&in));
    EXPECT_EQ(in.count(), i);
    EXPECT_EQ(in.payload().size(), static_cast<size_t>(i * 100));
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(RelayTest, SixMebibyteRequestAndAnswerPass) {
  auto stub = Stub();
  grpc::ClientContext context;
  SetDeadline(context, 30s);
  EchoMessage request, reply;
  request.set_payload(std::string(6 << 20, 'q'));
  request.set_answer_bytes(6 << 20);
  grpc::Status status = stub->Unary(&context, request, &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(reply.payload().size(), static_cast<size_t>(6 << 20));
  EXPECT_EQ(reply.payload(), std::string(6 << 20, 'r'));
}

TEST_F(RelayTest, ErrorStatusMessageAndDetailsPassUnchanged) {
  auto stub = Stub();
  grpc::ClientContext context;
  SetDeadline(context, 10s);
  EchoMessage request, reply;
  request.set_code(static_cast<int>(grpc::StatusCode::NOT_FOUND));
  request.set_text("image \"x\" not found: 100% gone\nline two");
  request.set_payload(std::string("\x01\x02\x00\xff details", 12));
  grpc::Status status = stub->Fail(&context, request, &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), request.text());
  EXPECT_EQ(status.error_details(), request.payload());
}

TEST_F(RelayTest, DeadlineReachesTheRuntimeAndNoneIsAdded) {
  auto stub = Stub();
  {
    grpc::ClientContext context;
    SetDeadline(context, 7s);
    EchoMessage request, reply;
    ASSERT_TRUE(stub->Deadline(&context, request, &reply).ok());
    long long ms = runtime_->counters().last_deadline_ms;
    EXPECT_GT(ms, 5000);
    EXPECT_LE(ms, 7100);  // grpc-timeout is rounded up on the wire
  }
  {
    grpc::ClientContext context;  // no deadline: the runtime must see none either
    EchoMessage request, reply;
    ASSERT_TRUE(stub->Deadline(&context, request, &reply).ok());
    EXPECT_GT(runtime_->counters().last_deadline_ms.load(), 24LL * 3600 * 1000);
  }
}

TEST_F(RelayTest, ClientCancelReachesTheRuntime) {
  auto stub = Stub();
  grpc::ClientContext context;
  std::thread canceller([&] {
    std::this_thread::sleep_for(300ms);
    context.TryCancel();
  });
  EchoMessage request, reply;
  grpc::Status status = stub->Hang(&context, request, &reply);
  canceller.join();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  for (int i = 0; i < 200 && runtime_->counters().cancelled == 0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(runtime_->counters().cancelled.load(), 1);
}

TEST_F(RelayTest, ClientDeadlineExpiryCancelsTheRuntimeCall) {
  auto stub = Stub();
  grpc::ClientContext context;
  SetDeadline(context, 300ms);
  EchoMessage request, reply;
  grpc::Status status = stub->Hang(&context, request, &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  for (int i = 0; i < 200 && runtime_->counters().cancelled == 0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(runtime_->counters().cancelled.load(), 1);
}

TEST_F(RelayTest, UnknownMethodGetsTheRuntimesAnswer) {
  grpc::ChannelArguments args;
  auto channel = grpc::CreateCustomChannel("unix:" + dir_ + "/shim.sock",
                                           grpc::InsecureChannelCredentials(), args);
  auto stub = shimtest::Missing::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(context, 10s);
  EchoMessage request, reply;
  EXPECT_EQ(stub->Nothing(&context, request, &reply).error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(RelayTest, ManyConcurrentCallsAllSucceed) {
  auto stub = Stub();
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        grpc::ClientContext context;
        SetDeadline(context, 20s);
        EchoMessage request, reply;
        request.set_payload("t" + std::to_string(t) + "i" + std::to_string(i));
        if (stub->Unary(&context, request, &reply).ok() && reply.payload() == request.payload()) {
          ok++;
        }
      }
    });
  }
  // Streams in flight at once on the same connection as the unary calls.
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<EchoMessage>>> readers;
  for (int i = 0; i < 100; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    SetDeadline(*contexts.back(), 20s);
    EchoMessage request;
    request.set_count(3);
    request.set_answer_bytes(10);
    readers.push_back(stub->ServerStream(contexts.back().get(), request));
  }
  int streamed = 0;
  for (auto& r : readers) {
    EchoMessage m;
    while (r->Read(&m)) ++streamed;
    EXPECT_TRUE(r->Finish().ok());
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 800);
  EXPECT_EQ(streamed, 300);
}

TEST_F(RelayTest, SlowReaderHoldsTheRuntimeBackInsteadOfFillingMemory) {
  auto stub = Stub();
  grpc::ClientContext context;
  SetDeadline(context, 60s);
  EchoMessage request;
  request.set_count(256);
  request.set_answer_bytes(256 * 1024);  // 64 MiB in all
  auto reader = stub->ServerStream(&context, request);
  EchoMessage m;
  ASSERT_TRUE(reader->Read(&m));
  std::this_thread::sleep_for(1500ms);  // the reader stalls; windows must fill and stop it
  long long written = runtime_->counters().streamed_bytes;
  // Windows on each hop (client, relay, runtime transport) hold some MiB; not all 64.
  EXPECT_LT(written, 40LL << 20) << "the relay buffered without bound";
  int n = 1;
  while (reader->Read(&m)) ++n;
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(n, 256);
}

TEST_F(RelayTest, RuntimeGoingAwayMidStreamFailsTheCallAndLaterCallsWork) {
  auto stub = Stub();
  {
    grpc::ClientContext context;
    SetDeadline(context, 20s);
    EchoMessage request;
    request.set_count(1000000);
    request.set_answer_bytes(100);
    auto reader = stub->ServerStream(&context, request);
    EchoMessage m;
    ASSERT_TRUE(reader->Read(&m));
    std::thread stopper([&] { runtime_->Stop(); });
    while (reader->Read(&m)) {
    }
    grpc::Status status = reader->Finish();
    stopper.join();
    EXPECT_FALSE(status.ok());
  }
  {
    grpc::ClientContext context;
    SetDeadline(context, 10s);
    EchoMessage request, reply;
    grpc::Status status = stub->Unary(&context, request, &reply);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  runtime_->Start();
  grpc::ClientContext context;
  SetDeadline(context, 10s);
  EchoMessage request, reply;
  request.set_payload("back");
  grpc::Status status = stub->Unary(&context, request, &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(reply.payload(), "back");
}

// Connects a raw socket to the shim.
int RawConnect(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

TEST_F(RelayTest, GarbageAndSilentClientsDoNotDisturbOthers) {
  int silent = RawConnect(dir_ + "/shim.sock");
  ASSERT_GE(silent, 0);
  int garbage = RawConnect(dir_ + "/shim.sock");
  ASSERT_GE(garbage, 0);
  std::string junk(4096, '\0');
  for (size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<char>((i * 7919) & 0xff);
  ASSERT_EQ(write(garbage, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  // The shim answers garbage by closing the connection (after a GOAWAY at most).
  char buf[1024];
  timeval tv{5, 0};
  setsockopt(garbage, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ssize_t n;
  while ((n = read(garbage, buf, sizeof buf)) > 0) {
  }
  EXPECT_EQ(n, 0) << "the connection was not closed";
  close(garbage);

  std::string echoed;
  ASSERT_TRUE(UnaryEcho(*Stub(), "still here", &echoed).ok());
  EXPECT_EQ(echoed, "still here");
  close(silent);
}

// A connection that never sends the HTTP/2 preface is closed after the preface timeout; one
// that sent it stays open while idle (kubelet keeps its connection between calls).
TEST_F(RelayTest, SilentConnectionsAreClosedAfterThePrefaceTimeout) {
  loop_.Post([&] { server_->set_preface_timeout(300ms); });
  std::this_thread::sleep_for(50ms);
  int silent = RawConnect(dir_ + "/shim.sock");
  ASSERT_GE(silent, 0);
  int spoke = RawConnect(dir_ + "/shim.sock");
  ASSERT_GE(spoke, 0);
  std::string preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  preface += std::string("\0\0\0\x04\0\0\0\0\0", 9);  // empty SETTINGS
  ASSERT_EQ(write(spoke, preface.data(), preface.size()), static_cast<ssize_t>(preface.size()));
  auto closed_within = [](int fd, std::chrono::milliseconds wait) {
    // Reads (and drops) what the shim sends until EOF or `wait` passes.
    auto until = std::chrono::steady_clock::now() + wait;
    char buf[1024];
    while (std::chrono::steady_clock::now() < until) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 50) > 0 && read(fd, buf, sizeof buf) == 0) return true;
    }
    return false;
  };
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(closed_within(silent, 5s)) << "a silent connection stayed open";
  EXPECT_GE(std::chrono::steady_clock::now() - start, 200ms) << "closed before the timeout";
  EXPECT_FALSE(closed_within(spoke, 600ms)) << "a connection that spoke HTTP/2 was closed";
  close(silent);
  close(spoke);
}

// Out of descriptors, accept() fails while the connection stays queued, so the listening socket
// stays readable: the relay must stop watching it for a while instead of spinning, keep serving,
// and take the queued connections once descriptors are free again.
TEST_F(RelayTest, OutOfDescriptorsPausesAcceptingInsteadOfSpinning) {
  // An upstream connection exists before the shortage; the client's stays open throughout, so
  // the relay's connection count changes only with the raw clients below.
  auto first = Stub();
  ASSERT_TRUE(UnaryEcho(*first, "").ok());
  auto connections = [&] {
    std::promise<size_t> count;
    loop_.Post([&] { count.set_value(server_->connections()); });
    return count.get_future().get();
  };
  size_t before = connections();

  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  int highest = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    highest = std::max(highest, std::stoi(entry.path().filename().string()));
  }
  rlimit tight = saved;
  tight.rlim_cur = static_cast<rlim_t>(highest + 16);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &tight), 0);
  std::vector<int> fillers;
  // Whatever happens below, the limit and the descriptors are given back for the next tests.
  struct Restore {
    rlimit limit;
    std::vector<int>& fds;
    void Now() {
      setrlimit(RLIMIT_NOFILE, &limit);
      for (int fd : fds) close(fd);
      fds.clear();
    }
    ~Restore() { Now(); }
  } restore{saved, fillers};
  // The four client sockets exist before the shortage, so connecting them needs no descriptor:
  // freeing descriptors for them later would race the relay's own accept retries for the same
  // slots. Then every descriptor left is taken; the connections queue on the listening socket and
  // cannot be accepted while the shortage lasts.
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, (dir_ + "/shim.sock").c_str(), sizeof addr.sun_path - 1);
  std::vector<int> clients;
  for (int i = 0; i < 4; ++i) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    clients.push_back(fd);
  }
  for (int fd; (fd = dup(STDERR_FILENO)) >= 0;) fillers.push_back(fd);
  ASSERT_FALSE(fillers.empty());
  for (int fd : clients) {
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  // Leave the loop time to hit EMFILE, then measure its thread's CPU time while the shortage
  // lasts: a loop spinning on the readable listening socket burns the whole window.
  std::this_thread::sleep_for(100ms);
  clockid_t loop_clock;
  ASSERT_EQ(pthread_getcpuclockid(loop_thread_.native_handle(), &loop_clock), 0);
  auto cpu_now = [&] {
    timespec ts{};
    clock_gettime(loop_clock, &ts);
    return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
  };
  auto cpu_before = cpu_now();
  std::this_thread::sleep_for(600ms);
  auto cpu_used = std::chrono::duration_cast<std::chrono::milliseconds>(cpu_now() - cpu_before);
  size_t accepted_in_shortage = connections() - before;

  restore.Now();
  EXPECT_LT(cpu_used, 150ms) << "the loop spins while out of descriptors";
  EXPECT_EQ(accepted_in_shortage, 0u) << "no shortage happened: the test proves nothing";
  // Descriptors are back: the queued connections are taken, and new calls are served.
  EXPECT_TRUE([&] {
    for (int i = 0; i < 100; ++i) {
      if (connections() - before == clients.size()) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }()) << "queued connections were not accepted after the shortage: "
       << connections() - before << " of " << clients.size();
  for (int fd : clients) close(fd);
  std::string echoed;
  ASSERT_TRUE(UnaryEcho(*Stub(), "after the shortage", &echoed).ok());
  EXPECT_EQ(echoed, "after the shortage");
}

// Reads HTTP/2 frames from `fd` until one of `type` with `flags` set arrives; returns its payload.
std::optional<std::string> ReadFrameUntil(int fd, uint8_t type, uint8_t flags) {
  std::string buffer;
  char chunk[4096];
  while (true) {
    while (buffer.size() >= 9) {
      auto b = reinterpret_cast<const unsigned char*>(buffer.data());
      size_t length = (size_t{b[0]} << 16) | (size_t{b[1]} << 8) | b[2];
      if (buffer.size() < 9 + length) break;
      if (b[3] == type && (b[4] & flags) == flags) return buffer.substr(9, length);
      buffer.erase(0, 9 + length);
    }
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n <= 0) return std::nullopt;
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

TEST_F(RelayTest, PingsAreAnsweredEvenWhenNothingElseIsSent) {
  int fd = RawConnect(dir_ + "/shim.sock");
  ASSERT_GE(fd, 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string out = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  out += std::string("\0\0\0\x04\0\0\0\0\0", 9);                 // empty SETTINGS
  out += std::string("\0\0\x08\x06\0\0\0\0\0", 9) + "12345678";  // PING
  ASSERT_EQ(write(fd, out.data(), out.size()), static_cast<ssize_t>(out.size()));
  auto start = std::chrono::steady_clock::now();
  auto ack = ReadFrameUntil(fd, 0x6, 0x1);
  ASSERT_TRUE(ack.has_value()) << "no PING ACK";
  EXPECT_EQ(*ack, "12345678");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  close(fd);
}

// --- The relay's HTTP/2 at the frame level ---------------------------------------------------

// One frame as it goes on the wire.
std::string FrameBytes(uint8_t type, uint8_t flags, uint32_t stream_id, std::string_view payload) {
  std::string out;
  size_t n = payload.size();
  for (uint32_t v : {static_cast<uint32_t>(n >> 16), static_cast<uint32_t>(n >> 8),
                     static_cast<uint32_t>(n), uint32_t{type}, uint32_t{flags}, stream_id >> 24,
                     stream_id >> 16, stream_id >> 8, stream_id}) {
    out.push_back(static_cast<char>(v & 0xff));
  }
  out.append(payload);
  return out;
}

std::string ClientPreface() {
  return "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + FrameBytes(0x4, 0, 0, "");
}

struct Frame {
  uint8_t type;
  uint8_t flags;
  uint32_t stream_id;
  std::string payload;
};

// Every frame the shim sends on `fd` until it closes the connection (or 5 s pass, then
// `closed` stays false).
std::vector<Frame> ReadFramesUntilClosed(int fd, bool* closed) {
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string buffer;
  char chunk[4096];
  ssize_t n;
  while ((n = read(fd, chunk, sizeof chunk)) > 0) buffer.append(chunk, static_cast<size_t>(n));
  *closed = n == 0;
  std::vector<Frame> frames;
  size_t at = 0;
  while (buffer.size() - at >= 9) {
    auto b = reinterpret_cast<const unsigned char*>(buffer.data() + at);
    size_t length = (size_t{b[0]} << 16) | (size_t{b[1]} << 8) | b[2];
    if (buffer.size() - at < 9 + length) break;
    uint32_t id =
        (uint32_t{b[5]} << 24 | uint32_t{b[6]} << 16 | uint32_t{b[7]} << 8 | b[8]) & 0x7fffffff;
    frames.push_back({b[3], b[4], id, buffer.substr(at + 9, length)});
    at += 9 + length;
  }
  return frames;
}

uint32_t Read32(std::string_view bytes) {
  auto b = reinterpret_cast<const unsigned char*>(bytes.data());
  return uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | b[3];
}

// The headers of a block, decoded by libnghttp2's decoder with its own table.
shim::relay::Headers Decode(nghttp2_hd_inflater* inflater, std::string_view block) {
  shim::relay::Headers headers;
  auto in = reinterpret_cast<const uint8_t*>(block.data());
  size_t left = block.size();
  while (true) {
    nghttp2_nv nv;
    int flags = 0;
    ssize_t n = nghttp2_hd_inflate_hd2(inflater, &nv, &flags, in, left, 1);
    if (n < 0) {
      ADD_FAILURE() << "undecodable header block: " << nghttp2_strerror(static_cast<int>(n));
      return headers;
    }
    in += n;
    left -= static_cast<size_t>(n);
    if (flags & NGHTTP2_HD_INFLATE_EMIT) {
      headers.push_back({std::string(reinterpret_cast<char*>(nv.name), nv.namelen),
                         std::string(reinterpret_cast<char*>(nv.value), nv.valuelen)});
    }
    if (flags & NGHTTP2_HD_INFLATE_FINAL) break;
    if (!(flags & NGHTTP2_HD_INFLATE_EMIT) && left == 0) break;
  }
  nghttp2_hd_inflate_end_headers(inflater);
  return headers;
}

// What the shim sent on stream 1 of a raw connection.
struct RawAnswer {
  std::string body;  // DATA payloads
  shim::relay::Headers trailers;
  bool ended = false;             // HEADERS with END_STREAM came
  std::optional<uint32_t> reset;  // RST_STREAM's code, if one came
};

// A client connection that writes raw bytes and reads the shim's answer on stream 1 frame by
// frame, header blocks decoded.
class RawClient {
 public:
  explicit RawClient(const std::string& socket) : fd_(RawConnect(socket)) {
    nghttp2_hd_inflate_new(&inflater_);
    timeval tv{5, 0};
    if (fd_ >= 0) setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~RawClient() {
    nghttp2_hd_inflate_del(inflater_);
    if (fd_ >= 0) close(fd_);
  }
  bool connected() const { return fd_ >= 0; }
  bool Send(const std::string& bytes) {
    return write(fd_, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
  }
  // Limits the table of the client's decoder, as SETTINGS_HEADER_TABLE_SIZE does once acked.
  void LimitDecoderTable(size_t size) { nghttp2_hd_inflate_change_table_size(inflater_, size); }
  // Reads the answer on `stream_id` into `answer` until `done` says so; false when the
  // connection ended or nothing came for 5 s.
  bool Read(RawAnswer& answer, const std::function<bool(const RawAnswer&)>& done,
            uint32_t stream_id = 1) {
    char chunk[4096];
    while (true) {
      // Frames after the one that completes the answer stay for the next Read: they may belong
      // to the stream it reads.
      while (!done(answer) && buffer_.size() >= 9) {
        auto b = reinterpret_cast<const unsigned char*>(buffer_.data());
        size_t length = (size_t{b[0]} << 16) | (size_t{b[1]} << 8) | b[2];
        if (buffer_.size() < 9 + length) break;
        std::string payload = buffer_.substr(9, length);
        uint32_t id = Read32(std::string_view(buffer_).substr(5)) & 0x7fffffff;
        if (b[3] == 0x0 && id == stream_id) answer.body += payload;
        if (b[3] == 0x1) {
          shim::relay::Headers headers = Decode(inflater_, payload);  // every block: HPACK
          if (id == stream_id && (b[4] & 0x1)) {
            answer.trailers = headers;
            answer.ended = true;
          }
        }
        if (b[3] == 0x3 && id == stream_id && payload.size() == 4) answer.reset = Read32(payload);
        buffer_.erase(0, 9 + length);
      }
      if (done(answer)) return true;
      ssize_t n = read(fd_, chunk, sizeof chunk);
      if (n <= 0) return false;
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

 private:
  int fd_;
  std::string buffer_;
  nghttp2_hd_inflater* inflater_ = nullptr;
};

// The gRPC body of one EchoMessage with `payload`.
std::string EchoBody(const std::string& payload) {
  EchoMessage request;
  request.set_payload(payload);
  std::string message = request.SerializeAsString();
  std::string body(1, '\0');
  for (int shift : {24, 16, 8, 0}) body.push_back(static_cast<char>(message.size() >> shift));
  return body + message;
}

std::string RequestBlock(const std::string& path) {
  std::string block;
  shim::relay::EncodeHeaderBlock({{":method", "POST"},
                                  {":scheme", "http"},
                                  {":path", path},
                                  {":authority", "localhost"},
                                  {"content-type", "application/grpc"},
                                  {"te", "trailers"}},
                                 block);
  return block;
}

// A peer that breaks HTTP/2 gets a GOAWAY naming the error and loses its connection; the relay
// goes on serving everyone else.
TEST_F(RelayTest, ProtocolViolationsEndTheConnectionWithAGoAwayNamingTheError) {
  std::string request_block;
  shim::relay::EncodeHeaderBlock({{":method", "POST"}, {":path", "/shimtest.Echo/Unary"}},
                                 request_block);
  struct Case {
    const char* what;
    std::string bytes;  // after the preface
    uint32_t code;
  };
  const Case cases[] = {
      {"a frame over 16 KiB", FrameBytes(0x0, 0, 1, std::string(16385, 'x')),
       NGHTTP2_FRAME_SIZE_ERROR},
      {"PUSH_PROMISE from a client", FrameBytes(0x5, 0x4, 1, std::string("\0\0\0\x02", 4)),
       NGHTTP2_PROTOCOL_ERROR},
      {"DATA on a stream never opened", FrameBytes(0x0, 0, 7, "abc"), NGHTTP2_PROTOCOL_ERROR},
      {"a stream with an even id", FrameBytes(0x1, 0x4, 2, request_block), NGHTTP2_PROTOCOL_ERROR},
      {"an undecodable header block", FrameBytes(0x1, 0x4, 1, "\xff\xff\xff\xff\xff"),
       NGHTTP2_COMPRESSION_ERROR},
      {"HEADERS interrupted by PING",
       FrameBytes(0x1, 0, 1, request_block) + FrameBytes(0x6, 0, 0, "12345678"),
       NGHTTP2_PROTOCOL_ERROR},
      {"the connection's window past 2^31-1",
       FrameBytes(0x8, 0, 0, std::string("\x7f\xff\xff\xff", 4)), NGHTTP2_FLOW_CONTROL_ERROR},
      {"a WINDOW_UPDATE of 0", FrameBytes(0x8, 0, 0, std::string(4, '\0')), NGHTTP2_PROTOCOL_ERROR},
      {"DATA padded beyond its length",
       FrameBytes(0x1, 0x4, 1, request_block) + FrameBytes(0x0, 0x8, 1, std::string("\x09xx", 3)),
       NGHTTP2_PROTOCOL_ERROR},
      {"SETTINGS_INITIAL_WINDOW_SIZE past 2^31-1",
       FrameBytes(0x4, 0, 0, std::string("\0\x04\x80\0\0\0", 6)), NGHTTP2_FLOW_CONTROL_ERROR},
      {"SETTINGS on a stream", FrameBytes(0x4, 0, 1, ""), NGHTTP2_PROTOCOL_ERROR},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    int fd = RawConnect(dir_ + "/shim.sock");
    ASSERT_GE(fd, 0);
    std::string out = ClientPreface() + c.bytes;
    ASSERT_EQ(write(fd, out.data(), out.size()), static_cast<ssize_t>(out.size()));
    bool closed = false;
    std::vector<Frame> frames = ReadFramesUntilClosed(fd, &closed);
    close(fd);
    EXPECT_TRUE(closed) << "the connection stayed open";
    auto goaway =
        std::find_if(frames.begin(), frames.end(), [](const Frame& f) { return f.type == 0x7; });
    ASSERT_NE(goaway, frames.end()) << "no GOAWAY";
    ASSERT_GE(goaway->payload.size(), 8u);
    EXPECT_EQ(Read32(std::string_view(goaway->payload).substr(4)), c.code);
  }
  std::string echoed;
  ASSERT_TRUE(UnaryEcho(*Stub(), "after the violations", &echoed).ok());
  EXPECT_EQ(echoed, "after the violations");
}

// Padding, priority fields and a header block split over CONTINUATION frames, which the gRPC
// libraries do not send on their own, are understood; the answer comes back whole.
TEST_F(RelayTest, PaddedPrioritizedAndContinuedFramesAreUnderstood) {
  std::string block = RequestBlock("/shimtest.Echo/Unary");
  std::string body = EchoBody("padded");
  std::string out = ClientPreface();
  // HEADERS: padded (3 bytes), with a priority, and only the first 5 bytes of the block.
  std::string headers_payload = std::string(1, '\x03') + std::string("\x80\0\0\0\x10", 5) +
                                block.substr(0, 5) + std::string(3, '\0');
  out += FrameBytes(0x1, 0x8 | 0x20, 1, headers_payload);
  out += FrameBytes(0x9, 0, 1, block.substr(5, 4));
  out += FrameBytes(0x9, 0x4, 1, block.substr(9));
  out += FrameBytes(0x2, 0, 1, std::string("\0\0\0\x03\x20", 5));  // PRIORITY: ignored
  // DATA: the body in two padded frames, the second with END_STREAM.
  out += FrameBytes(0x0, 0x8, 1, std::string(1, '\x02') + body.substr(0, 4) + "pp");
  out += FrameBytes(0x0, 0x8 | 0x1, 1, std::string(1, '\0') + body.substr(4));
  RawClient client(dir_ + "/shim.sock");
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.Send(out));
  RawAnswer answer;
  EXPECT_TRUE(client.Read(answer, [](const RawAnswer& a) { return a.ended; }));
  const std::string* status = shim::relay::FindHeader(answer.trailers, "grpc-status");
  ASSERT_NE(status, nullptr);
  EXPECT_EQ(*status, "0");
  EXPECT_EQ(answer.body, body) << "the echo differs";
}

// A caller whose window the answer filled exactly still gets the end of the call: trailers are
// not flow-controlled, and the caller has no reason to open its window again.
TEST_F(RelayTest, TrailersFollowAnAnswerThatFilledTheCallersWindow) {
  std::string body = EchoBody("fills the window");
  std::string settings;
  settings += std::string("\0\x04", 2);  // SETTINGS_INITIAL_WINDOW_SIZE: exactly the echo
  for (int shift : {24, 16, 8, 0}) settings.push_back(static_cast<char>(body.size() >> shift));
  std::string out = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + FrameBytes(0x4, 0, 0, settings);
  out += FrameBytes(0x1, 0x4, 1, RequestBlock("/shimtest.Echo/Bidi"));
  out += FrameBytes(0x0, 0, 1, body);
  RawClient client(dir_ + "/shim.sock");
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.Send(out));
  RawAnswer answer;
  ASSERT_TRUE(
      client.Read(answer, [&](const RawAnswer& a) { return a.body.size() >= body.size(); }));
  EXPECT_EQ(answer.body, body);
  // The request ends only now, so the runtime's trailers come after the window is used up.
  ASSERT_TRUE(client.Send(FrameBytes(0x0, 0x1, 1, "")));
  EXPECT_TRUE(client.Read(answer, [](const RawAnswer& a) { return a.ended; }))
      << "no trailers without a WINDOW_UPDATE";
  const std::string* status = shim::relay::FindHeader(answer.trailers, "grpc-status");
  ASSERT_NE(status, nullptr);
  EXPECT_EQ(*status, "0");
}

// A client whose decoder takes no table (SETTINGS_HEADER_TABLE_SIZE 0) hears the shim's encoder
// say "table size 0" at the start of its next block, as RFC 7541 4.2 asks; a decoder that
// insists on it (libnghttp2's does) fails the block otherwise.
TEST_F(RelayTest, AClientDecoderWithoutATableIsToldTheTableSize) {
  RawClient client(dir_ + "/shim.sock");
  ASSERT_TRUE(client.connected());
  client.LimitDecoderTable(0);
  std::string table_size_0("\0\x01\0\0\0\0", 6);
  std::string out = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + FrameBytes(0x4, 0, 0, table_size_0);
  out += FrameBytes(0x4, 0x1, 0, "");  // ACK of the shim's SETTINGS
  out += FrameBytes(0x1, 0x4, 1, RequestBlock("/shimtest.Echo/Unary"));
  out += FrameBytes(0x0, 0x1, 1, EchoBody("no table"));
  ASSERT_TRUE(client.Send(out));
  RawAnswer answer;
  ASSERT_TRUE(client.Read(answer, [](const RawAnswer& a) { return a.ended; }));
  const std::string* status = shim::relay::FindHeader(answer.trailers, "grpc-status");
  ASSERT_NE(status, nullptr);
  EXPECT_EQ(*status, "0");
  EXPECT_EQ(answer.body, EchoBody("no table"));
}

// HPACK integer with an N-bit prefix, for hand-made header blocks.
std::string HpackInteger(uint8_t first, int prefix_bits, size_t value) {
  size_t max_prefix = (size_t{1} << prefix_bits) - 1;
  std::string out;
  if (value < max_prefix) return std::string(1, static_cast<char>(first | value));
  out.push_back(static_cast<char>(first | max_prefix));
  for (value -= max_prefix; value >= 128; value >>= 7) {
    out.push_back(static_cast<char>(0x80 | (value & 0x7f)));
  }
  out.push_back(static_cast<char>(value));
  return out;
}

// A header list over the announced SETTINGS_MAX_HEADER_LIST_SIZE (here 1.2 MB decoded from a 4 KB
// block, through HPACK's table) fails that call with RST_STREAM; the connection and the next
// call on it go on.
TEST_F(RelayTest, AHeaderListOverTheLimitFailsItsCallNotTheConnection) {
  RawClient client(dir_ + "/shim.sock");
  ASSERT_TRUE(client.connected());
  std::string block = RequestBlock("/shimtest.Echo/Unary");
  // A 4,000-byte field into the table (literal with incremental indexing, new name), then 300
  // references to it (index 62: the first dynamic entry).
  block +=
      '\x40' + HpackInteger(0, 7, 6) + "x-fill" + HpackInteger(0, 7, 4000) + std::string(4000, 'f');
  for (int i = 0; i < 300; ++i) block += HpackInteger(0x80, 7, 62);
  std::string out = ClientPreface() + FrameBytes(0x1, 0x4, 1, block) +
                    FrameBytes(0x0, 0x1, 1, EchoBody("too big")) +
                    FrameBytes(0x1, 0x4, 3, RequestBlock("/shimtest.Echo/Unary")) +
                    FrameBytes(0x0, 0x1, 3, EchoBody("next"));
  ASSERT_TRUE(client.Send(out));
  RawAnswer refused, next;
  ASSERT_TRUE(client.Read(
      refused, [](const RawAnswer& a) { return a.reset.has_value(); }, 1));
  EXPECT_EQ(*refused.reset, NGHTTP2_ENHANCE_YOUR_CALM);
  ASSERT_TRUE(client.Read(
      next, [](const RawAnswer& a) { return a.ended; }, 3))
      << "the connection did not survive";
  const std::string* status = shim::relay::FindHeader(next.trailers, "grpc-status");
  ASSERT_NE(status, nullptr);
  EXPECT_EQ(*status, "0");
  EXPECT_EQ(next.body, EchoBody("next"));
  EXPECT_EQ(runtime_->counters().calls, 1) << "the oversized call reached the runtime";
}

// Metadata larger than a frame crosses both hops in HEADERS + CONTINUATION, both ways.
TEST_F(RelayTest, MetadataLargerThanAFrameCrossesBothWays) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_MAX_METADATA_SIZE, 1 << 20);
  auto stub = shimtest::Echo::NewStub(grpc::CreateCustomChannel(
      "unix:" + dir_ + "/shim.sock", grpc::InsecureChannelCredentials(), args));
  std::string big;
  for (int i = 0; big.size() < 40000; ++i) big += std::to_string(i) + ",";
  grpc::ClientContext context;
  SetDeadline(context, 10s);
  context.AddMetadata("x-test-meta", big);
  EchoMessage request, reply;
  request.set_payload("big metadata");
  grpc::Status status = stub->Unary(&context, request, &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(reply.payload(), "big metadata");
  auto echoed = context.GetServerInitialMetadata().find("x-echo-meta");
  ASSERT_NE(echoed, context.GetServerInitialMetadata().end());
  EXPECT_EQ(std::string(echoed->second.data(), echoed->second.size()), big);
  auto trailer = context.GetServerTrailingMetadata().find("x-trailer");
  ASSERT_NE(trailer, context.GetServerTrailingMetadata().end());
  EXPECT_EQ(std::string(trailer->second.data(), trailer->second.size()), "done");
}

// A runtime that takes only two calls at a time (SETTINGS_MAX_CONCURRENT_STREAMS): the relay
// holds the others until one ends instead of sending streams the runtime would refuse.
TEST(RelayLimitTest, TheRuntimesStreamLimitQueuesCallsInsteadOfFailingThem) {
  char tmpl[] = "/tmp/shim-relay-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  shimtest::FakeRuntime runtime(dir + "/runtime.sock");
  runtime.set_max_concurrent_streams(2);
  runtime.Start();
  shim::relay::EventLoop loop;
  auto fd = shim::relay::ListenUnix(dir + "/shim.sock");
  ASSERT_TRUE(fd.ok());
  shim::relay::RelayServer server(loop, runtime.socket_path(), nullptr);
  server.Serve(*fd);
  std::thread thread([&] { loop.Run(); });
  auto stub = shimtest::Echo::NewStub(
      grpc::CreateChannel("unix:" + dir + "/shim.sock", grpc::InsecureChannelCredentials()));
  auto call = [&](const std::string& method, std::chrono::milliseconds deadline) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + deadline);
    EchoMessage request, reply;
    request.set_payload(method);
    return method == "Hang" ? stub->Hang(&context, request, &reply)
                            : stub->Unary(&context, request, &reply);
  };
  ASSERT_TRUE(call("Unary", 10s).ok());  // the runtime's SETTINGS are known from here on
  auto start = std::chrono::steady_clock::now();
  std::vector<std::future<grpc::Status>> hangs;
  for (int i = 0; i < 2; ++i) hangs.push_back(std::async(std::launch::async, call, "Hang", 1500ms));
  for (int i = 0; i < 100 && runtime.counters().in_flight < 2; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(runtime.counters().in_flight, 2);
  std::vector<std::future<grpc::Status>> unary;
  for (int i = 0; i < 3; ++i) unary.push_back(std::async(std::launch::async, call, "Unary", 20s));
  for (auto& h : hangs) EXPECT_EQ(h.get().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  for (auto& u : unary) {
    grpc::Status status = u.get();
    EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  }
  // They waited for the hanging calls to end (a stream over the limit is refused by the runtime,
  // which the relay would have answered UNAVAILABLE).
  EXPECT_GE(std::chrono::steady_clock::now() - start, 1400ms);
  EXPECT_EQ(runtime.counters().calls, 6);
  loop.Stop();
  thread.join();
  close(*fd);
  runtime.Stop();
  std::filesystem::remove_all(dir);
}

TEST(RelayDownTest, RuntimeDownAnswersUnavailableNamingTheSocket) {
  char tmpl[] = "/tmp/shim-relay-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  shim::relay::EventLoop loop;
  auto fd = shim::relay::ListenUnix(dir + "/shim.sock");
  ASSERT_TRUE(fd.ok());
  shim::relay::RelayServer server(loop, dir + "/absent.sock", nullptr);
  server.Serve(*fd);
  std::thread thread([&] { loop.Run(); });
  auto channel =
      grpc::CreateChannel("unix:" + dir + "/shim.sock", grpc::InsecureChannelCredentials());
  auto stub = shimtest::Echo::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 10s);
  EchoMessage request, reply;
  grpc::Status status = stub->Unary(&context, request, &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(status.error_message().find(dir + "/absent.sock"), std::string::npos)
      << status.error_message();
  loop.Stop();
  thread.join();
  close(*fd);
  std::filesystem::remove_all(dir);
}

}  // namespace
