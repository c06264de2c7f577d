// The text exposition format as Prometheus reads it: escaping of label values and HELP text,
// and the shape of family and sample lines.
#include "daemon/prometheus_text.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

namespace shim::daemon {
namespace {

TEST(PrometheusText, LabelValuesEscapeBackslashQuoteAndNewline) {
  EXPECT_EQ(EscapeLabelValue("plain https://r.example:5000"), "plain https://r.example:5000");
  EXPECT_EQ(EscapeLabelValue(R"(C:\dir)"), R"(C:\\dir)");
  EXPECT_EQ(EscapeLabelValue(R"(say "hi")"), R"(say \"hi\")");
  EXPECT_EQ(EscapeLabelValue("two\nlines"), R"(two\nlines)");
  EXPECT_EQ(EscapeLabelValue("\\\"\n"), R"(\\\"\n)");
  // Only those three: tabs, carriage returns and UTF-8 pass as they are.
  EXPECT_EQ(EscapeLabelValue("a\tb\rc é"), "a\tb\rc é");
  EXPECT_EQ(EscapeLabelValue(""), "");
}

TEST(PrometheusText, HelpEscapesBackslashAndNewlineButNotQuotes) {
  EXPECT_EQ(EscapeHelp(R"(the "runtime" at C:\x)"), R"(the "runtime" at C:\\x)");
  EXPECT_EQ(EscapeHelp("first\nsecond"), R"(first\nsecond)");
}

TEST(PrometheusText, FamiliesAndSamples) {
  std::string out;
  PrometheusText text(out);
  text.Family("shim_up", "gauge", "Whether it is up.\nReally.");
  text.Sample("shim_up", {}, 1);
  text.Sample("shim_up", {{"registry", "r\"1"}, {"state", "a\\b\nc"}},
              uint64_t{18446744073709551615u});
  text.Sample("shim_seconds", {{"le", "+Inf"}}, 0.25);
  text.Sample("shim_seconds", {}, 1.0);
  text.Sample("shim_seconds", {}, 1732845208.125);
  EXPECT_EQ(out,
            "# HELP shim_up Whether it is up.\\nReally.\n"
            "# TYPE shim_up gauge\n"
            "shim_up 1\n"
            "shim_up{registry=\"r\\\"1\",state=\"a\\\\b\\nc\"} 18446744073709551615\n"
            "shim_seconds{le=\"+Inf\"} 0.25\n"
            "shim_seconds 1\n"
            "shim_seconds 1732845208.125\n");
}

}  // namespace
}  // namespace shim::daemon
