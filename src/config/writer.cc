#include "config/writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace shim::config {
namespace {

std::string ErrnoText(int error) {
  return std::strerror(error);
}

// Closes and removes the temporary file unless it was renamed into place.
class TempFile {
 public:
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!path.empty()) ::unlink(path.c_str());
  }
  int fd = -1;
  std::string path;  // cleared once renamed
};

}  // namespace

Status WriteFileAtomically(const std::string& path, std::string_view content, mode_t mode) {
  std::filesystem::path target(path);
  std::string dir = target.parent_path().empty() ? "." : target.parent_path().string();
  // A dot name, so that tools globbing *.yaml in the directory never pick up a half-written copy.
  std::string pattern = dir + "/." + target.filename().string() + ".tmp-XXXXXX";

  TempFile temp;
  temp.fd = ::mkostemp(pattern.data(), O_CLOEXEC);
  if (temp.fd < 0) {
    return Status::Error("cannot create a temporary file in " + dir + " to write " + path + ": " +
                         ErrnoText(errno));
  }
  temp.path = pattern;
  if (::fchmod(temp.fd, mode) != 0) {
    return Status::Error("cannot set the mode of " + temp.path + ": " + ErrnoText(errno));
  }
  size_t written = 0;
  while (written < content.size()) {
    ssize_t n = ::write(temp.fd, content.data() + written, content.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return Status::Error("cannot write " + temp.path + " (for " + path +
                           "): " + ErrnoText(errno));
    }
    written += static_cast<size_t>(n);
  }
  // Without fsync a crash right after the rename could leave an empty file under the real name.
  if (::fsync(temp.fd) != 0) {
    return Status::Error("cannot flush " + temp.path + " to disk: " + ErrnoText(errno));
  }
  int fd = temp.fd;
  temp.fd = -1;
  if (::close(fd) != 0) {
    return Status::Error("cannot close " + temp.path + ": " + ErrnoText(errno));
  }
  if (::rename(temp.path.c_str(), path.c_str()) != 0) {
    return Status::Error("cannot rename " + temp.path + " to " + path + ": " + ErrnoText(errno));
  }
  temp.path.clear();
  // The rename itself lives in the directory: flush it too, best effort (the file is in place).
  int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  return Status::Ok();
}

}  // namespace shim::config
