#include "subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <thread>

#include "test_util.h"

extern char** environ;

namespace shim::testing {
namespace {

std::string ResolveInPath(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path_env = getenv("PATH");
  std::string path = path_env ? path_env : "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return name;  // execve fails with ENOENT and the message names it
}

ExitStatus FromWaitStatus(int status) {
  ExitStatus exit;
  if (WIFEXITED(status)) {
    exit.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    exit.signal = WTERMSIG(status);
  }
  return exit;
}

}  // namespace

std::string FormatCommandLine(const std::vector<std::string>& argv) {
  std::string line;
  bool secret_next = false;
  for (const auto& arg : argv) {
    if (!line.empty()) line += ' ';
    line += secret_next ? "****" : arg;
    secret_next =
        arg == "--creds" || arg == "--dest-creds" || arg == "--src-creds" || arg == "--password";
  }
  return line;
}

std::string ExitStatus::ToString() const {
  if (signal != 0) {
    const char* name = sigabbrev_np(signal);
    return std::string("killed by SIG") + (name ? name : std::to_string(signal).c_str());
  }
  return "exit " + std::to_string(code);
}

Subprocess::Subprocess(SubprocessOptions options) : options_(std::move(options)) {
  if (options_.argv.empty()) throw std::invalid_argument("Subprocess: empty argv");
}

Subprocess::~Subprocess() {
  Stop();
}

std::string Subprocess::CommandLine() const {
  return FormatCommandLine(options_.argv);
}

void Subprocess::Start() {
  if (Running()) throw std::runtime_error("already running: " + CommandLine());

  // Everything the child needs is prepared here: after fork in a threaded program (gRPC) only
  // async-signal-safe calls are allowed.
  std::string binary = ResolveInPath(options_.argv[0]);
  std::vector<char*> argv;
  for (auto& arg : options_.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);

  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view entry(*e);
    std::string key(entry.substr(0, entry.find('=')));
    if (!options_.env.contains(key)) env_storage.emplace_back(entry);
  }
  for (const auto& [key, value] : options_.env) env_storage.push_back(key + "=" + value);
  std::vector<char*> envp;
  for (auto& entry : env_storage) envp.push_back(entry.data());
  envp.push_back(nullptr);

  int out_fd = options_.log_path.empty() ? open("/dev/null", O_WRONLY | O_CLOEXEC)
                                         : open(options_.log_path.c_str(),
                                                O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out_fd < 0) {
    throw std::runtime_error("cannot open log " + options_.log_path + ": " + strerror(errno));
  }
  int in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int report[2];
  if (in_fd < 0 || pipe2(report, O_CLOEXEC) != 0) {
    int err = errno;
    close(out_fd);
    if (in_fd >= 0) close(in_fd);
    throw std::runtime_error(std::string("pipe: ") + strerror(err));
  }
  const char* working_dir = options_.working_dir.empty() ? nullptr : options_.working_dir.c_str();
  pid_t parent = getpid();

  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(out_fd);
    close(in_fd);
    close(report[0]);
    close(report[1]);
    throw std::runtime_error(std::string("fork: ") + strerror(err));
  }
  if (pid == 0) {
    // Child: own process group (Stop kills the group), dies with the test binary.
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the parent died before prctl took effect
    // Signals blocked or ignored by the test binary (a sandbox shell ignores SIGINT for
    // background jobs) must not leak into the child.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, &dfl, nullptr);
    dup2(in_fd, 0);
    dup2(out_fd, 1);
    dup2(out_fd, 2);
    if (working_dir != nullptr && chdir(working_dir) != 0) {
      int err = errno;
      (void)!write(report[1], &err, sizeof(err));
      _exit(127);
    }
    execve(binary.c_str(), argv.data(), envp.data());
    int err = errno;
    (void)!write(report[1], &err, sizeof(err));
    _exit(127);
  }
  setpgid(pid, pid);  // also from the parent, so Stop cannot race the child's own setpgid
  close(out_fd);
  close(in_fd);
  close(report[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = read(report[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  close(report[0]);
  pid_ = pid;
  last_exit_.reset();
  if (n == sizeof(child_errno)) {
    Reap(true);
    throw std::runtime_error("cannot start " + CommandLine() + ": " + binary + ": " +
                             strerror(child_errno));
  }
}

bool Subprocess::Reap(bool block) {
  if (pid_ <= 0) return true;
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &status, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return false;
  if (r == pid_) {
    last_exit_ = FromWaitStatus(status);
  } else {
    last_exit_ = ExitStatus{};  // ECHILD: someone else reaped it; nothing more to learn
  }
  pid_t group = pid_;
  pid_ = -1;
  // Whatever the child left in its group (grandchildren) goes with it.
  kill(-group, SIGKILL);
  return true;
}

bool Subprocess::Running() {
  return pid_ > 0 && !Reap(false);
}

bool Subprocess::Signal(int sig) {
  return Running() && kill(pid_, sig) == 0;
}

std::optional<ExitStatus> Subprocess::WaitExit(std::chrono::milliseconds timeout) {
  if (WaitUntil([this] { return !Running(); }, timeout, std::chrono::milliseconds(10))) {
    return last_exit_;
  }
  return std::nullopt;
}

ExitStatus Subprocess::Stop(std::chrono::milliseconds grace) {
  if (!Running()) return last_exit_.value_or(ExitStatus{});
  kill(pid_, SIGTERM);
  if (!WaitExit(grace)) {
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
    Reap(true);
  }
  return last_exit_.value_or(ExitStatus{});
}

std::string Subprocess::LogText() const {
  return options_.log_path.empty() ? "" : ReadFileIfExists(options_.log_path);
}

CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::map<std::string, std::string>& env,
                         std::chrono::milliseconds timeout) {
  std::string log_template = TempBase() + "/shim-cmd-XXXXXX";
  int fd = mkstemp(log_template.data());
  if (fd < 0) throw std::runtime_error(std::string("mkstemp: ") + strerror(errno));
  close(fd);
  std::string log_path = log_template;
  CommandResult result;
  {
    Subprocess process({.argv = argv, .env = env, .log_path = log_path, .working_dir = ""});
    try {
      process.Start();
    } catch (...) {
      unlink(log_path.c_str());
      throw;
    }
    auto exit = process.WaitExit(timeout);
    if (!exit) {
      process.Stop(std::chrono::seconds(2));
      result.status = process.last_exit().value_or(ExitStatus{});
      result.output = ReadFileIfExists(log_path) + "\n[harness] killed after " +
                      std::to_string(timeout.count()) + " ms";
    } else {
      result.status = *exit;
      result.output = ReadFileIfExists(log_path);
    }
  }
  unlink(log_path.c_str());
  return result;
}

std::string RunOrThrow(const std::vector<std::string>& argv,
                       const std::map<std::string, std::string>& env,
                       std::chrono::milliseconds timeout) {
  CommandResult result = RunCommand(argv, env, timeout);
  if (!result.status.Success()) {
    throw std::runtime_error(FormatCommandLine(argv) + ": " + result.status.ToString() + "\n" +
                             TailLines(result.output, 40));
  }
  return result.output;
}

}  // namespace shim::testing
