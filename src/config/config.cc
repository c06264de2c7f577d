#include "config/config.h"

namespace shim::config {

std::string Masked(const Credentials& credentials) {
  if (credentials.empty()) return "";
  return credentials.username + ":****";
}

}  // namespace shim::config
