// Unix stream sockets for the relay: the listening socket kubelet connects to.
#pragma once

#include <string>

#include "util/status.h"

namespace shim::relay {

// Binds and listens on `path` (which must not exist), non-blocking, close-on-exec.
StatusOr<int> ListenUnix(const std::string& path);

}  // namespace shim::relay
