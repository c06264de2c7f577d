#include "daemon/prometheus_text.h"

namespace shim::daemon {

namespace {

std::string Escape(std::string_view text, bool quote) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quote) {
      out += "\\\"";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

std::string EscapeLabelValue(std::string_view value) {
  return Escape(value, /*quote=*/true);
}

std::string EscapeHelp(std::string_view help) {
  return Escape(help, /*quote=*/false);
}

void PrometheusText::Family(std::string_view name, std::string_view type, std::string_view help) {
  out_.append("# HELP ").append(name).append(" ").append(EscapeHelp(help)).append("\n");
  out_.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

void PrometheusText::AppendSample(std::string_view name, Labels labels, std::string_view value) {
  out_.append(name);
  if (labels.size() != 0) {
    out_.push_back('{');
    bool first = true;
    for (const PrometheusLabel& label : labels) {
      if (!first) out_.push_back(',');
      first = false;
      out_.append(label.name).append("=\"").append(EscapeLabelValue(label.value)).append("\"");
    }
    out_.push_back('}');
  }
  out_.append(" ").append(value).append("\n");
}

}  // namespace shim::daemon
