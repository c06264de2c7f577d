// The local configuration file as an input: its directory is watched with inotify (editors and
// configuration management replace files by rename; a mounted ConfigMap volume swaps a `..data`
// link), and events closer together than a settle time make one re-read. The file is only read,
// never written. Not thread-safe: owned by the configuration thread.
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace shim::daemon {

class ConfigFileWatch {
 public:
  using Clock = std::chrono::steady_clock;

  explicit ConfigFileWatch(std::string path);
  ~ConfigFileWatch();
  ConfigFileWatch(const ConfigFileWatch&) = delete;
  ConfigFileWatch& operator=(const ConfigFileWatch&) = delete;

  // The inotify descriptor to wait on; -1 when the directory cannot be watched (said once in
  // the log: changes then arrive with the interval and SIGHUP only).
  int fd() const { return fd_; }
  // Reads pending events; a relevant one makes the file due for a re-read after the settle time.
  void Drain();
  // When the file is due for a re-read; nullopt when nothing changed.
  std::optional<Clock::time_point> due() const { return due_; }
  // True once, when the settle time after a change has passed.
  bool TakeDue(Clock::time_point now);

  // The file's content, or nullopt with `error` naming the path and the system's reason.
  static std::optional<std::string> Read(const std::string& path, std::string* error);

 private:
  std::string path_;
  std::string directory_;
  std::string base_name_;
  int fd_ = -1;
  std::optional<Clock::time_point> due_;
};

}  // namespace shim::daemon
