// Child processes for tests: real containerd, registries, the shim, one-shot tools. Each child
// runs in its own process group with stdout and stderr appended to a log file, dies with the
// test binary (PR_SET_PDEATHSIG) and is stopped and reaped by the destructor, so a failing test
// leaves nothing behind. For tests and test tools; one owner thread per object.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace shim::testing {

// How a child ended.
struct ExitStatus {
  int code = -1;   // exit code when it exited, -1 when killed by a signal
  int signal = 0;  // the signal that killed it, 0 when it exited
  bool Success() const { return code == 0; }
  std::string ToString() const;  // "exit 0", "killed by SIGKILL"
};

// Every member has a default, so designated initializers may name only what they need.
struct SubprocessOptions {
  std::vector<std::string> argv = {};  // argv[0] is looked up in PATH when it has no '/'
  // Added to (or replacing in) the test binary's environment.
  std::map<std::string, std::string> env = {};
  std::string log_path = {};     // stdout and stderr are appended here; "" = /dev/null
  std::string working_dir = {};  // "" = the caller's
};

class Subprocess {
 public:
  explicit Subprocess(SubprocessOptions options);  // does not start it
  ~Subprocess();                                   // Stop()
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  // Starts the process. Throws std::runtime_error when it is already running or the exec
  // fails (missing binary: the message names it). Can start again after it ended.
  // Must be called from a thread that outlives the child: PR_SET_PDEATHSIG fires when the
  // forking *thread* exits.
  void Start();
  // SIGTERM to the process, SIGKILL to its whole group after `grace`; reaps it and kills any
  // leftover member of its group. Returns how it ended (also when it had already ended).
  ExitStatus Stop(std::chrono::milliseconds grace = std::chrono::seconds(10));
  // Sends `sig` to the process; false when it is not running.
  bool Signal(int sig);
  // Reaps the child if it ended; true while it runs.
  bool Running();
  // Waits up to `timeout` for it to end by itself; nullopt when it still runs.
  std::optional<ExitStatus> WaitExit(std::chrono::milliseconds timeout);
  // The status of the last run that ended, if any.
  std::optional<ExitStatus> last_exit() const { return last_exit_; }

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return options_.log_path; }
  // Everything the child wrote so far ("" without a log file).
  std::string LogText() const;
  // "containerd --config /tmp/x/config.toml", for messages.
  std::string CommandLine() const;

 private:
  bool Reap(bool block);

  SubprocessOptions options_;
  pid_t pid_ = -1;
  std::optional<ExitStatus> last_exit_;
};

struct CommandResult {
  ExitStatus status;
  std::string output;  // stdout and stderr interleaved
};

// The command line for messages, with the value after --creds, --dest-creds, --src-creds and
// --password masked: harness errors quote command lines, and they must not quote passwords.
std::string FormatCommandLine(const std::vector<std::string>& argv);

// Runs a command to completion (killed after `timeout`) and returns its exit and output.
CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::map<std::string, std::string>& env = {},
                         std::chrono::milliseconds timeout = std::chrono::minutes(2));
// Same, but throws std::runtime_error with the command line and its output unless it exits 0.
std::string RunOrThrow(const std::vector<std::string>& argv,
                       const std::map<std::string, std::string>& env = {},
                       std::chrono::milliseconds timeout = std::chrono::minutes(2));

}  // namespace shim::testing
