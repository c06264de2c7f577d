// The gRPC-over-HTTP/2 pieces the relay speaks itself (src/relay/grpc_wire.h).
#include "relay/grpc_wire.h"

#include <gtest/gtest.h>

#include <string>

namespace shim::relay {
namespace {

using namespace std::string_literals;

TEST(GrpcStatusOf, ReadsTheStatusOrSaysItIsMissing) {
  constexpr int kMissing = -1;
  EXPECT_EQ(GrpcStatusOf({{"grpc-status", "0"}}, kMissing), 0);
  EXPECT_EQ(
      GrpcStatusOf({{":status", "200"}, {"grpc-status", "14"}, {"grpc-message", "x"}}, kMissing),
      14);
  EXPECT_EQ(GrpcStatusOf({}, kMissing), kMissing);
  EXPECT_EQ(GrpcStatusOf({{"grpc-message", "5"}}, kMissing), kMissing);
  // Not a number is not OK (0), whatever its first characters.
  for (const char* garbage : {"", "ok", "5x", " 5", "99999999999"}) {
    EXPECT_EQ(GrpcStatusOf({{"grpc-status", garbage}}, kMissing), kMissing) << garbage;
  }
  EXPECT_EQ(GrpcStatusOf(TrailersOnly(GrpcCode::kNotFound, "no such image"), kMissing), 5);
}

TEST(GrpcMessage, PercentEncodingRoundTripsEveryOctet) {
  std::string text;
  for (int c = 0; c < 256; ++c) text.push_back(static_cast<char>(c));
  std::string encoded = PercentEncode(text);
  for (unsigned char c : encoded) {
    EXPECT_TRUE(c >= 0x20 && c <= 0x7e) << "octet " << int{c} << " left unencoded";
  }
  EXPECT_EQ(PercentDecode(encoded), text);
  EXPECT_EQ(PercentEncode("50% done\n"), "50%25 done%0A");
  // A '%' that starts no escape is kept as it is.
  EXPECT_EQ(PercentDecode("100%"), "100%");
  EXPECT_EQ(PercentDecode("%zz%4"), "%zz%4");
}

TEST(GrpcMessage, OnlyOneWholeUncompressedMessageIsUnframed) {
  std::string framed = FrameMessage("hello");
  EXPECT_EQ(framed, "\x00\x00\x00\x00\x05hello"s);
  ASSERT_TRUE(SingleMessage(framed).has_value());
  EXPECT_EQ(*SingleMessage(framed), "hello");
  EXPECT_EQ(*SingleMessage(FrameMessage("")), "");
  EXPECT_FALSE(SingleMessage("\x01\x00\x00\x00\x05hello"s)) << "compressed";
  EXPECT_FALSE(SingleMessage(framed.substr(0, framed.size() - 1))) << "cut short";
  EXPECT_FALSE(SingleMessage(framed + framed)) << "two messages";
  EXPECT_FALSE(SingleMessage("\x00\x00\x00"s)) << "shorter than the prefix";
}

}  // namespace
}  // namespace shim::relay
