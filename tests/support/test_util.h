// Small helpers shared by the test harness: loopback ports, files, polling, unix sockets.
// For tests and test tools only. Every function is safe to call from any thread.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

namespace shim::testing {

// A TCP socket bound to 127.0.0.1 on a port of the kernel's choice, written to `*port`; not
// listening yet. Throws std::runtime_error naming `what` on failure.
int BindLoopback(int* port, const std::string& what = "bind 127.0.0.1:0");

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed). Another
// process may take it before the caller binds; good enough for tests on one machine.
int FreeLoopbackPort();

// Whole file as a string; throws std::runtime_error naming the path when it cannot be read.
std::string ReadFile(const std::string& path);
// Whole file, or "" when it does not exist or cannot be read (logs that may not be there yet).
std::string ReadFileIfExists(const std::string& path);
// The number of a field of /proc/PID/status: KiB for "VmRSS", "RssAnon", "RssFile"; a count
// for "voluntary_ctxt_switches" (of the main thread). -1 when unreadable.
long ProcStatusField(int pid, const std::string& field);
// Writes (truncates) the file with the given mode; throws naming the path on failure.
void WriteFile(const std::string& path, std::string_view content, unsigned mode = 0644);

// Polls `condition` every `interval` until it returns true (-> true) or `timeout` passes
// (-> false). The condition runs on the caller's thread.
bool WaitUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
               std::chrono::milliseconds interval = std::chrono::milliseconds(20));

// True when something listens on the unix socket `path` (a connect succeeds).
bool UnixSocketAccepts(const std::string& path);

// A plain HTTP/1.1 GET of http://127.0.0.1:port/path (Connection: close, 15 s receive timeout),
// e.g. of the shim's metrics and health endpoint.
struct HttpAnswer {
  int status = 0;  // 0: no connection or no parsable answer
  std::string body;
  std::string error;
};
HttpAnswer HttpGet(int port, const std::string& path);

// The last `lines` lines of `text`, for error messages that quote a log.
std::string TailLines(const std::string& text, int lines = 30);
// How often `part` occurs in `text` (overlapping occurrences count): log lines, requests.
int CountOccurrences(std::string_view text, std::string_view part);

// Where temporary directories go: $SHIM_TEST_TMPDIR when set (sandbox.sh sets it to a directory
// it removes at the end, so a crashed or killed test leaves nothing), else /tmp.
std::string TempBase();

// SHIM_KEEP_TEST_DIRS=1: temporary directories are kept for post-mortem reading.
bool KeepTestDirs();

}  // namespace shim::testing
