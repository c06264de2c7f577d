// The Prometheus text exposition format (version 0.0.4), written in one place: the HELP and TYPE
// lines that open a metric family, and sample lines whose label values are escaped as the format
// requires, so that a registry address or a state name with a quote in it cannot break a scrape.
//
// A writer appends to a string the caller owns; one writer per scrape, on the scraping thread.
#pragma once

#include <fmt/format.h>

#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>

namespace shim::daemon {

struct PrometheusLabel {
  std::string_view name;   // an identifier fixed in the code: written as it is
  std::string_view value;  // any text: escaped
};

class PrometheusText {
 public:
  using Labels = std::initializer_list<PrometheusLabel>;

  explicit PrometheusText(std::string& out) : out_(out) {}

  // "# HELP name help" and "# TYPE name type"; `type` is counter, gauge, histogram...
  void Family(std::string_view name, std::string_view type, std::string_view help);

  // "name{label="value",...} value", with no braces when there are no labels. Integers are
  // written as integers, floating point in the shortest form that reads back the same.
  template <typename Number>
  void Sample(std::string_view name, Labels labels, Number value) {
    static_assert(std::is_arithmetic_v<Number> && !std::is_same_v<Number, bool>,
                  "a sample's value is a number");
    AppendSample(name, labels, fmt::format("{}", value));
  }

 private:
  void AppendSample(std::string_view name, Labels labels, std::string_view value);

  std::string& out_;
};

// A label value as the format quotes it: backslash, double quote and line feed escaped.
std::string EscapeLabelValue(std::string_view value);

// HELP text as the format reads it: backslash and line feed escaped (a quote stays as it is).
std::string EscapeHelp(std::string_view help);

}  // namespace shim::daemon
