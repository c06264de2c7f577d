// Status and StatusOr: values and errors, and the crash (in release builds too) when a caller
// breaks a REQUIRES instead of reading undefined memory.
#include "util/status.h"

#include <gtest/gtest.h>

#include <string>

namespace shim {
namespace {

StatusOr<std::string> Parse(bool good) {
  if (!good) return Status::Error("cannot parse /etc/x: bad");
  return std::string("value");
}

TEST(StatusOr, HoldsAValueOrAnError) {
  auto good = Parse(true);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(good.value(), "value");
  EXPECT_EQ(*good, "value");
  EXPECT_EQ(good->size(), 5u);
  auto bad = Parse(false);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "cannot parse /etc/x: bad");
}

using StatusDeathTest = ::testing::Test;

TEST_F(StatusDeathTest, TheValueOfAnErrorAbortsWithItsMessage) {
  auto bad = Parse(false);
  EXPECT_DEATH((void)bad.value(), "value of a failed StatusOr: cannot parse /etc/x: bad");
  EXPECT_DEATH((void)*bad, "value of a failed StatusOr");
  EXPECT_DEATH((void)bad->size(), "value of a failed StatusOr");
  EXPECT_DEATH((void)std::move(bad).value(), "value of a failed StatusOr");
}

TEST_F(StatusDeathTest, AStatusOrBuiltFromOkAborts) {
  EXPECT_DEATH(StatusOr<int>{Status::Ok()}, "StatusOr built from an OK status");
}

TEST_F(StatusDeathTest, TheMessageOfAnOkStatusAborts) {
  EXPECT_DEATH((void)Status::Ok().message(), "message\\(\\) of an OK status");
}

}  // namespace
}  // namespace shim
