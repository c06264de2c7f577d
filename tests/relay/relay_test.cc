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

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <optional>
#include <thread>
#include <vector>

#include "echo_test.grpc.pb.h"
#include "fake_runtime.h"
#include "relay/event_loop.h"
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
