// ProbeRegistry's handling of a registry's `ca` file it cannot read: the probe fails with the
// path and the system's reason (instead of probing with another trust than the configured one),
// and the failure is logged once per registry and reason, not at every probe. And the prober's
// loop, through its probe seam: only down registries are probed, with backoff, until they
// answer; a registry no longer configured is forgotten; Stop returns at once.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "config/store.h"
#include "log_capture.h"
#include "registry/prober.h"

namespace shim::registry {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

class ProberCa : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/prober-ca-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    capture_ = std::make_shared<testing::LogCapture>();
    previous_ = spdlog::default_logger();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("test", capture_));
    // Nothing listens on port 1: a probe that went to the network fails with another reason.
    registry_.address = "https://127.0.0.1:1";
    registry_.scheme = "https";
    registry_.host = "127.0.0.1:1";
    registry_.ca_file = dir_ + "/ca.pem";
  }
  void TearDown() override {
    spdlog::set_default_logger(previous_);
    fs::remove_all(dir_);
  }
  ProbeResult Probe() { return ProbeRegistry(registry_, false, 2s); }

  std::string dir_;
  config::Registry registry_;
  std::shared_ptr<testing::LogCapture> capture_;
  std::shared_ptr<spdlog::logger> previous_;
};

TEST_F(ProberCa, AMissingCaFailsTheProbeNamingThePathAndTheReason) {
  ProbeResult result = Probe();
  EXPECT_EQ(result.state, ProbeResult::State::kDown);
  EXPECT_NE(result.detail.find("cannot read " + registry_.ca_file + ": " + std::strerror(ENOENT)),
            std::string::npos)
      << result.detail;
  EXPECT_NE(result.detail.find("`ca`"), std::string::npos) << result.detail;
}

TEST_F(ProberCa, ACaThatIsADirectoryFailsTheProbeWithTheReason) {
  ASSERT_TRUE(fs::create_directory(registry_.ca_file));
  ProbeResult result = Probe();
  EXPECT_EQ(result.state, ProbeResult::State::kDown);
  EXPECT_NE(result.detail.find(registry_.ca_file + ": " + std::strerror(EISDIR)), std::string::npos)
      << result.detail;
}

TEST_F(ProberCa, TheFailureIsLoggedOncePerReasonAndAgainAfterARecovery) {
  const std::string warning = "cannot read the CA file of a registry";
  for (int i = 0; i < 3; ++i) Probe();
  EXPECT_EQ(Count(capture_->Text(), warning), 1u) << capture_->Text();
  EXPECT_NE(capture_->Text().find(registry_.ca_file), std::string::npos) << capture_->Text();
  EXPECT_NE(capture_->Text().find("registry=https://127.0.0.1:1"), std::string::npos);

  ASSERT_TRUE(fs::create_directory(registry_.ca_file));  // another reason: logged
  for (int i = 0; i < 3; ++i) Probe();
  EXPECT_EQ(Count(capture_->Text(), warning), 2u) << capture_->Text();

  fs::remove(registry_.ca_file);
  std::ofstream(registry_.ca_file) << "not a certificate\n";
  ProbeResult readable = Probe();  // goes to the network now, and fails there
  EXPECT_EQ(readable.detail.find("cannot read"), std::string::npos) << readable.detail;
  fs::remove(registry_.ca_file);
  Probe();  // broken again: logged again
  EXPECT_EQ(Count(capture_->Text(), warning), 3u) << capture_->Text();
}

TEST_F(ProberCa, NoCaIsReadWhenVerificationIsOff) {
  registry_.insecure_skip_verify = true;
  ProbeResult result = Probe();
  EXPECT_EQ(result.detail.find("cannot read"), std::string::npos) << result.detail;
  EXPECT_EQ(Count(capture_->Text(), "cannot read the CA file"), 0u) << capture_->Text();
}

// --- the loop ---

config::Registry Named(const std::string& host) {
  config::Registry r;
  r.address = "https://" + host;
  r.scheme = "https";
  r.host = host;
  return r;
}

class ProberLoop : public ::testing::Test {
 protected:
  ProberLoop()
      : health_(clock_, BackoffPolicy{20ms, 80ms, 0.0}),
        store_(std::make_shared<config::Config>(Config({"a.example.com", "b.example.com"}))) {}

  static config::Config Config(const std::vector<std::string>& hosts) {
    config::Config c;
    for (const auto& h : hosts) c.registries.push_back(Named(h));
    return c;
  }

  // Answers "down" to the first `failures` probes of each registry, then "up".
  Prober::ProbeFunction Fake(int failures) {
    return [this, failures](const config::Registry& r) {
      std::lock_guard lock(mutex_);
      int n = ++probes_[r.address];
      ProbeResult result;
      result.state = n > failures ? ProbeResult::State::kUp : ProbeResult::State::kDown;
      result.detail = "fake: probe " + std::to_string(n);
      return result;
    };
  }
  int Probes(const std::string& address) {
    std::lock_guard lock(mutex_);
    return probes_[address];
  }
  bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout = 5s) {
    auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      if (done()) return true;
      std::this_thread::sleep_for(5ms);
    }
    return done();
  }

  SystemClock clock_;
  RegistryHealth health_;
  config::ConfigStore store_;
  std::mutex mutex_;
  std::map<std::string, int> probes_;
};

TEST_F(ProberLoop, OnlyADownRegistryIsProbedUntilItAnswers) {
  Prober prober(health_, store_, Fake(/*failures=*/2));
  prober.Start();
  health_.MarkDown("https://a.example.com", "refused");
  ASSERT_TRUE(WaitFor([&] { return !health_.IsDown("https://a.example.com"); }));
  EXPECT_EQ(Probes("https://a.example.com"), 3) << "two failures with backoff, then up";
  std::this_thread::sleep_for(150ms);  // longer than the largest backoff: no probe comes
  EXPECT_EQ(Probes("https://a.example.com"), 3) << "an up registry is never probed";
  EXPECT_EQ(Probes("https://b.example.com"), 0) << "a healthy registry is never probed";
  prober.Stop();
}

TEST_F(ProberLoop, ARegistryNoLongerConfiguredIsForgottenAndStopIsPrompt) {
  Prober prober(health_, store_, Fake(/*failures=*/1000));
  prober.Start();
  health_.MarkDown("https://b.example.com", "refused");
  ASSERT_TRUE(WaitFor([&] { return Probes("https://b.example.com") >= 2; }));
  store_.Swap(std::make_shared<config::Config>(Config({"a.example.com"})));
  health_.Wake();
  ASSERT_TRUE(WaitFor([&] { return !health_.IsDown("https://b.example.com"); }))
      << "forgotten once it left the configuration";
  int probes = Probes("https://b.example.com");
  std::this_thread::sleep_for(150ms);
  EXPECT_EQ(Probes("https://b.example.com"), probes);
  auto start = std::chrono::steady_clock::now();
  prober.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
}

}  // namespace
}  // namespace shim::registry
