#include "config/config.h"

namespace shim::config {

std::string Masked(const Credentials& credentials) {
  if (credentials.empty()) return "";
  return credentials.username + ":****";
}

bool NamespaceMatches(const std::vector<std::string>& patterns, std::string_view ns) {
  if (ns.empty()) return false;
  for (const std::string& pattern : patterns) {
    std::string_view p = pattern;
    if (p.ends_with('*') ? ns.starts_with(p.substr(0, p.size() - 1)) : ns == p) return true;
  }
  return false;
}

}  // namespace shim::config
