// The health state machine, driven by a fake clock: down marks, backoff with jitter bounds,
// recovery, forgetting unconfigured registries, and the once-only credential warning.
#include <gtest/gtest.h>

#include "registry/health.h"

namespace shim::registry {
namespace {

using namespace std::chrono_literals;

class FakeClock final : public Clock {
 public:
  TimePoint Now() const override { return now_; }
  void Advance(std::chrono::milliseconds d) { now_ += d; }

 private:
  TimePoint now_ = TimePoint() + std::chrono::hours(1);
};

struct Change {
  std::string registry;
  bool up;
};

class HealthTest : public ::testing::Test {
 protected:
  HealthTest() : health_(clock_, BackoffPolicy{1000ms, 8000ms, 0.2}, 42) {
    health_.set_listener([this](const std::string& r, bool up, const std::string&) {
      changes_.push_back({r, up});
    });
  }
  FakeClock clock_;
  RegistryHealth health_;
  std::vector<Change> changes_;
};

TEST_F(HealthTest, NothingIsDownOrDueAtFirst) {
  EXPECT_FALSE(health_.IsDown("https://a"));
  EXPECT_TRUE(health_.DueForProbe().empty());
  EXPECT_FALSE(health_.NextProbeAt().has_value());
}

TEST_F(HealthTest, MarkDownSchedulesAProbeWithinTheJitteredInitialDelay) {
  auto before = clock_.Now();
  health_.MarkDown("https://a", "connection refused");
  EXPECT_TRUE(health_.IsDown("https://a"));
  EXPECT_EQ(health_.DownReason("https://a"), "connection refused");
  ASSERT_TRUE(health_.NextProbeAt().has_value());
  auto delay = *health_.NextProbeAt() - before;
  EXPECT_GE(delay, 800ms);
  EXPECT_LE(delay, 1200ms);
  EXPECT_TRUE(health_.DueForProbe().empty());
  clock_.Advance(1200ms);
  EXPECT_EQ(health_.DueForProbe(), std::vector<std::string>{"https://a"});
  ASSERT_EQ(changes_.size(), 1u);
  EXPECT_FALSE(changes_[0].up);
}

TEST_F(HealthTest, RepeatedDownMarksAreOneChange) {
  health_.MarkDown("https://a", "refused");
  health_.MarkDown("https://a", "refused again");
  EXPECT_EQ(changes_.size(), 1u);
  EXPECT_EQ(health_.DownReason("https://a"), "refused again");
}

TEST_F(HealthTest, FailedProbesDoubleTheDelayUpToTheCap) {
  health_.MarkDown("https://a", "refused");
  std::vector<std::chrono::milliseconds> delays;
  for (int i = 0; i < 6; ++i) {
    clock_.Advance(20000ms);
    ASSERT_EQ(health_.DueForProbe().size(), 1u);
    auto now = clock_.Now();
    health_.ProbeFailed("https://a", "still refused");
    delays.push_back(
        std::chrono::duration_cast<std::chrono::milliseconds>(*health_.NextProbeAt() - now));
  }
  // 2s, 4s, 8s, then capped at 8s; each within +-20%.
  const int64_t expected[] = {2000, 4000, 8000, 8000, 8000, 8000};
  for (size_t i = 0; i < delays.size(); ++i) {
    EXPECT_GE(delays[i].count(), expected[i] * 8 / 10) << i;
    EXPECT_LE(delays[i].count(), expected[i] * 12 / 10) << i;
  }
}

TEST_F(HealthTest, MarkUpEndsProbingAndIsReportedOnce) {
  health_.MarkDown("https://a", "refused");
  health_.MarkUp("https://a");
  health_.MarkUp("https://a");
  EXPECT_FALSE(health_.IsDown("https://a"));
  EXPECT_FALSE(health_.NextProbeAt().has_value());
  ASSERT_EQ(changes_.size(), 2u);
  EXPECT_TRUE(changes_[1].up);
  // Down again starts from the initial delay, not from the old backoff.
  auto before = clock_.Now();
  health_.MarkDown("https://a", "refused");
  EXPECT_LE(*health_.NextProbeAt() - before, 1200ms);
}

TEST_F(HealthTest, RetainForgetsRegistriesNoLongerConfigured) {
  health_.MarkDown("https://a", "refused");
  health_.MarkDown("https://b", "refused");
  health_.Retain({"https://b"});
  EXPECT_FALSE(health_.IsDown("https://a"));
  EXPECT_TRUE(health_.IsDown("https://b"));
  EXPECT_EQ(health_.Snapshot().size(), 1u);
}

TEST_F(HealthTest, CredentialRejectionIsReportedOnceUntilASuccess) {
  EXPECT_TRUE(health_.NoteCredentialsRejected("https://a"));
  EXPECT_FALSE(health_.NoteCredentialsRejected("https://a"));
  EXPECT_FALSE(health_.IsDown("https://a")) << "rejected credentials do not make it down";
  health_.MarkUp("https://a");
  EXPECT_TRUE(health_.NoteCredentialsRejected("https://a"));
}

}  // namespace
}  // namespace shim::registry
