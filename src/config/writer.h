// Atomic replacement of a file's content, for the configuration file the shim rewrites when a
// ConfigMap changes it. Readers (the shim itself on the next reload, an operator's editor) see
// either the old content or the new one, never a mix. Thread-safe (no shared state); blocking
// I/O: never call it from the relay's event-loop thread.
#pragma once

#include <string>
#include <string_view>

#include <sys/types.h>

#include "util/status.h"

namespace shim::config {

// Writes `content` to a temporary file in the directory of `path`, fsyncs it, renames it over
// `path` and fsyncs the directory. The new file has `mode` (0600 by default: it holds
// passwords). On any failure the temporary file is removed and `path` is left as it was; the
// error names the path and the system's reason.
Status WriteFileAtomically(const std::string& path, std::string_view content, mode_t mode = 0600);

}  // namespace shim::config
