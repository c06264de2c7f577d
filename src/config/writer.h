// Atomic replacement of a file's content, for the configuration file the shim rewrites when a
// ConfigMap changes it, and the private directory such files live in. Readers (the shim itself
// on the next reload, an operator's editor) see either the old content or the new one, never a
// mix. Thread-safe (no shared state); blocking I/O: never call these from the relay's
// event-loop thread.
#pragma once

#include <string>
#include <string_view>

#include <sys/types.h>

#include "util/status.h"

namespace shim::config {

// Writes `content` to a temporary file in the directory of `path`, fsyncs it, renames it over
// `path` and fsyncs the directory. The new file has `mode` (0600 by default: it holds
// passwords). On any failure the temporary file is removed and `path` is left as it was; the
// error names the path and the system's reason. The shim runs as root, so no link is followed:
// the temporary file is created exclusively under a fresh name, and a `path` that is a symbolic
// link (or not a regular file) is refused.
Status WriteFileAtomically(const std::string& path, std::string_view content, mode_t mode = 0600);

// Makes `path` a directory only its owner can enter: creates it with mode 0700 if missing (its
// parent must exist: only the last component is created), or checks that the existing one is
// a real directory owned by this process's user (a symbolic link, or a directory of another
// owner, is refused) and tightens its mode to 0700 if group or others have any access. Errors name
// the path and the system's reason.
Status EnsurePrivateDirectory(const std::string& path);

}  // namespace shim::config
