// Reading a small file whole (a token, a CA bundle, a kubeconfig), with an error that says which
// file and why (the system's errno text), so that no caller turns an unreadable file into an
// empty one. Thread-safe (no shared state); blocking I/O: never call it on the relay's loop.
#pragma once

#include <cstddef>
#include <string>

#include "util/status.h"

namespace shim::util {

// What `path` may be.
enum class FileRule {
  kAny,                // anything open() and read() accept, links followed
  kRegularFile,        // a regular file, links followed (a mounted ConfigMap's files are links)
  kRegularFileNoLink,  // a regular file that is not itself a link (files the shim owns)
};

// The content of `path`. Errors read "cannot read <path>: <reason>", where the reason is the
// system's errno text, "not a regular file", or says the file is larger than `max_bytes`.
StatusOr<std::string> ReadWholeFile(const std::string& path, size_t max_bytes = 16 << 20,
                                    FileRule rule = FileRule::kAny);

}  // namespace shim::util
