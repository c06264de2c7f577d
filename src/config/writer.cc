#include "config/writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
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

// Unique within the process; the pid makes it unique between processes, and a leftover of a
// crashed process that had the same pid is skipped by O_EXCL and the retry.
std::string NextTempSuffix() {
  static std::atomic<unsigned> counter{0};
  return std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
}

// Refuses a target that rename() would not replace as the user expects: a symbolic link would
// itself be replaced by a plain file, cutting it loose from what it pointed to.
Status CheckTarget(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return Status::Error("cannot inspect " + path + " before replacing it: " + ErrnoText(errno));
  }
  if (S_ISLNK(st.st_mode)) {
    return Status::Error(path +
                         " is a symbolic link; the shim replaces this file and does not "
                         "write through links: put the file itself at " +
                         path + " or point the shim at the link's target");
  }
  if (!S_ISREG(st.st_mode)) {
    return Status::Error(path +
                         " exists and is not a regular file; remove it or choose "
                         "another path");
  }
  return Status::Ok();
}

}  // namespace

Status WriteFileAtomically(const std::string& path, std::string_view content, mode_t mode) {
  std::filesystem::path target(path);
  std::string dir = target.parent_path().empty() ? "." : target.parent_path().string();
  if (Status s = CheckTarget(path); !s.ok()) return s;

  TempFile temp;
  // A dot name, so that tools globbing *.yaml in the directory never pick up a half-written copy.
  // O_EXCL and O_NOFOLLOW: the shim runs as root, so whatever sits at the name (a link planted
  // by someone else) is never opened, only skipped.
  std::string prefix = dir + "/." + target.filename().string() + ".tmp-";
  constexpr int kAttempts = 100;
  int error = 0;
  for (int attempt = 0; attempt < kAttempts && temp.fd < 0; ++attempt) {
    std::string candidate = prefix + NextTempSuffix();
    int fd = ::open(candidate.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) {
      temp.fd = fd;
      temp.path = candidate;
    } else {
      error = errno;
      if (error != EEXIST) break;
    }
  }
  if (temp.fd < 0) {
    return Status::Error("cannot create a temporary file in " + dir + " to write " + path + ": " +
                         ErrnoText(error));
  }
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

Status EnsurePrivateDirectory(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    int err = errno;
    if (err == ENOENT) {
      std::string parent = std::filesystem::path(path).parent_path().string();
      return Status::Error("cannot create the directory " + path + ": its parent " + parent +
                           " does not exist (" + ErrnoText(err) + "); create it first");
    }
    return Status::Error("cannot create the directory " + path + ": " + ErrnoText(err));
  }
  // Opened without following links, then checked and chmodded through the descriptor: a link
  // swapped in after mkdir cannot redirect the chmod.
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    struct stat st {};
    if (err == ELOOP ||
        (err == ENOTDIR && ::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode))) {
      return Status::Error(path +
                           " is a symbolic link, not a directory; the shim keeps private "
                           "files only in a real directory: replace the link by a "
                           "directory");
    }
    if (err == ENOTDIR) {
      return Status::Error(path +
                           " exists and is not a directory; remove it or choose another "
                           "path");
    }
    return Status::Error("cannot open the directory " + path + ": " + ErrnoText(err));
  }
  struct stat st {};
  Status result;
  if (::fstat(fd, &st) != 0) {
    result = Status::Error("cannot inspect the directory " + path + ": " + ErrnoText(errno));
  } else if (st.st_uid != ::geteuid()) {
    // Its owner could read or replace what the shim keeps there, whatever the mode says.
    result =
        Status::Error("the directory " + path + " belongs to uid " + std::to_string(st.st_uid) +
                      ", not to this process (uid " + std::to_string(::geteuid()) +
                      "); the shim keeps private files only in its own directory: chown it "
                      "or choose another path");
  } else if ((st.st_mode & 07077) != 0 && ::fchmod(fd, 0700) != 0) {
    result = Status::Error("cannot make the directory " + path +
                           " private (mode 0700): " + ErrnoText(errno));
  }
  ::close(fd);
  return result;
}

}  // namespace shim::config
