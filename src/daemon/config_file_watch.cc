#include "daemon/config_file_watch.h"

#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "util/file.h"
#include "util/log.h"

namespace shim::daemon {

using namespace std::chrono_literals;

namespace {
// Editors write a file in several steps; events closer together than this make one reload.
constexpr auto kFileSettle = 50ms;
}  // namespace

ConfigFileWatch::ConfigFileWatch(std::string path) : path_(std::move(path)) {
  directory_ = std::filesystem::path(path_).parent_path().string();
  if (directory_.empty()) directory_.assign(1, '.');  // assign: GCC 12 warns wrongly on = "."
  base_name_ = std::filesystem::path(path_).filename().string();
  fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd_ < 0 || ::inotify_add_watch(fd_, directory_.c_str(),
                                     IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE) < 0) {
    spdlog::warn(
        "cannot watch the configuration directory; changes are picked up every "
        "reloadInterval and on SIGHUP only dir={} error={}",
        directory_, log::Quoted(std::strerror(errno)));
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
}

ConfigFileWatch::~ConfigFileWatch() {
  if (fd_ >= 0) ::close(fd_);
}

void ConfigFileWatch::Drain() {
  if (fd_ < 0) return;
  alignas(inotify_event) char buffer[4096];
  while (true) {
    ssize_t n = ::read(fd_, buffer, sizeof buffer);
    if (n <= 0) return;
    for (char* p = buffer; p < buffer + n;) {
      auto* event = reinterpret_cast<inotify_event*>(p);
      std::string name = event->len > 0 ? event->name : "";
      // The file itself, or any rename into the directory: re-reading is cheap and unchanged
      // content is skipped.
      if (name == base_name_ || (event->mask & IN_MOVED_TO)) {
        if (!due_) due_ = Clock::now() + kFileSettle;
      }
      p += sizeof(inotify_event) + event->len;
    }
  }
}

bool ConfigFileWatch::TakeDue(Clock::time_point now) {
  if (!due_ || now < *due_) return false;
  due_.reset();
  return true;
}

std::optional<std::string> ConfigFileWatch::Read(const std::string& path, std::string* error) {
  StatusOr<std::string> text = util::ReadWholeFile(path, 16 << 20, util::FileRule::kRegularFile);
  if (!text.ok()) {
    *error = text.status().message();
    return std::nullopt;
  }
  return std::move(*text);
}

}  // namespace shim::daemon
