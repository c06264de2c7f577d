// ProbeRegistry's handling of a registry's `ca` file it cannot read: the probe fails with the
// path and the system's reason (instead of probing with another trust than the configured one),
// and the failure is logged once per registry and reason, not at every probe.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

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

}  // namespace
}  // namespace shim::registry
