#include "shim_process.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <iostream>
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

namespace {

// Copies the log to $SHIM_E2E_LOG_DIR, if set. Never throws: it runs from destructors.
void CopyLogForSuiteCheck(const std::string& log_path, const std::string& name) {
  const char* dir = getenv("SHIM_E2E_LOG_DIR");
  if (dir == nullptr || *dir == '\0') return;
  std::error_code ec;
  if (!std::filesystem::exists(log_path, ec)) return;  // never launched
  std::filesystem::create_directories(dir, ec);
  std::filesystem::copy_file(log_path, std::filesystem::path(dir) / name,
                             std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) {
    std::cerr << "shim_process: cannot copy " << log_path << " to " << dir << ": " << ec.message()
              << "\n";
  }
}

}  // namespace

ShimProcess::ShimProcess(ShimOptions options) : options_(std::move(options)) {
  static std::atomic<int> instances{0};
  log_copy_name_ = std::string(program_invocation_short_name) + "-" + std::to_string(getpid()) +
                   "-" + std::to_string(++instances) + ".log";
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
  ExitStatus status = process_->Stop(grace);
  CopyLogForSuiteCheck(options_.log_path, log_copy_name_);
  return status;
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
