// The built image-cri-shim daemon as a child process of a test: `image-cri-shim --file CONFIG
// [--debug]`, ready once its socket accepts connections, stopped with SIGTERM (a clean stop
// exits 0), its log kept for assertions. The binary is the build's (compile-time path from
// $<TARGET_FILE:image-cri-shim>), or $SHIM_BINARY when set. For tests and test tools; one
// owner thread.
//
// With $SHIM_E2E_LOG_DIR set (add_e2e_test sets it), every Stop also copies the shim's log there
// as <test binary>-<pid>-<n>.log, for the suite-wide secret check that runs after the e2e tests.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "subprocess.h"

namespace shim::testing {

// The shim binary the tests run: $SHIM_BINARY, else the build's.
std::string ShimBinaryPath();

struct ShimOptions {
  std::string config_path = {};  // passed as --file
  std::string socket_path = {};  // the config's `shim:` socket: readiness is a connect to it
  bool debug = false;            // adds --debug
  std::vector<std::string> extra_args = {};
  std::map<std::string, std::string> env = {};
  std::string log_path = {};  // "" = <config_path>.log
  std::string binary = {};    // "" = ShimBinaryPath()
};

class ShimProcess {
 public:
  explicit ShimProcess(ShimOptions options);  // does not start
  ~ShimProcess();                             // Stop()
  ShimProcess(const ShimProcess&) = delete;
  ShimProcess& operator=(const ShimProcess&) = delete;

  // Launch() and wait until the socket accepts connections. Throws std::runtime_error with the
  // shim's log when it exits first or is not ready within `timeout`.
  void Start(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Starts without waiting (e.g. a second instance that must be refused: use WaitExit).
  void Launch();
  // SIGTERM, SIGKILL after `grace`; returns how it ended (a clean stop is exit 0).
  ExitStatus Stop(std::chrono::milliseconds grace = std::chrono::seconds(10));
  bool Signal(int sig);  // e.g. SIGHUP to reload
  bool Running();
  std::optional<ExitStatus> WaitExit(std::chrono::milliseconds timeout);

  const std::string& Socket() const { return options_.socket_path; }
  // Everything the shim logged so far (stdout and stderr).
  std::string Log() const;
  pid_t pid() const { return process_->pid(); }

 private:
  ShimOptions options_;
  std::unique_ptr<Subprocess> process_;
  std::string log_copy_name_;  // file name under $SHIM_E2E_LOG_DIR
};

}  // namespace shim::testing
