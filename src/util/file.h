// Reading a small file whole (a token, a CA bundle, a kubeconfig), with an error that says which
// file and why (the system's errno text), so that no caller turns an unreadable file into an
// empty one. Thread-safe (no shared state); blocking I/O: never call it on the relay's loop.
#pragma once

#include <cstddef>
#include <string>

#include "util/status.h"

namespace shim::util {

// The content of `path` (links followed). Errors read "cannot read <path>: <reason>", where the
// reason is the system's errno text, or says the file is larger than `max_bytes`.
StatusOr<std::string> ReadWholeFile(const std::string& path, size_t max_bytes = 16 << 20);

}  // namespace shim::util
