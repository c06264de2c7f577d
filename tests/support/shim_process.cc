#include "shim_process.h"

#include <cstdlib>
#include <stdexcept>

#include "test_util.h"

#ifndef SHIM_BINARY_PATH
#define SHIM_BINARY_PATH "image-cri-shim"
#endif

namespace shim::testing {

std::string ShimBinaryPath() {
  const char* env = getenv("SHIM_BINARY");
  return env != nullptr && *env != '\0' ? env : SHIM_BINARY_PATH;
}

ShimProcess::ShimProcess(ShimOptions options) : options_(std::move(options)) {
  if (options_.binary.empty()) options_.binary = ShimBinaryPath();
  if (options_.log_path.empty()) options_.log_path = options_.config_path + ".log";
  std::vector<std::string> argv = {options_.binary, "--file", options_.config_path};
  if (options_.debug) argv.push_back("--debug");
  argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());
  process_ = std::make_unique<Subprocess>(SubprocessOptions{
      .argv = argv, .env = options_.env, .log_path = options_.log_path, .working_dir = ""});
}

ShimProcess::~ShimProcess() {
  Stop();
}

void ShimProcess::Launch() {
  process_->Start();
}

void ShimProcess::Start(std::chrono::milliseconds timeout) {
  Launch();
  bool ready = WaitUntil(
      [this] { return !process_->Running() || UnixSocketAccepts(options_.socket_path); }, timeout);
  if (!process_->Running()) {
    throw std::runtime_error(process_->CommandLine() + " exited before serving " +
                             options_.socket_path + " (" + process_->last_exit()->ToString() +
                             "):\n" + TailLines(Log()));
  }
  if (!ready) {
    Stop();
    throw std::runtime_error(process_->CommandLine() + ": " + options_.socket_path +
                             " accepted no connection within " + std::to_string(timeout.count()) +
                             " ms:\n" + TailLines(Log()));
  }
}

ExitStatus ShimProcess::Stop(std::chrono::milliseconds grace) {
  return process_->Stop(grace);
}

bool ShimProcess::Signal(int sig) {
  return process_->Signal(sig);
}

bool ShimProcess::Running() {
  return process_->Running();
}

std::optional<ExitStatus> ShimProcess::WaitExit(std::chrono::milliseconds timeout) {
  return process_->WaitExit(timeout);
}

std::string ShimProcess::Log() const {
  return process_->LogText();
}

}  // namespace shim::testing
