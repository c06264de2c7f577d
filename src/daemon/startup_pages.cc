#include "daemon/startup_pages.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace shim::daemon {

namespace {

struct Mapping {
  uintptr_t start = 0, end = 0;
  bool releasable = false;  // a file's pages, mapped private and never writable
  long rss_kib = 0;
  long anonymous_kib = 0;  // private copies: written at some point (relocations)
};

// The next blank-separated field of `line` from `*at`.
std::string_view NextField(std::string_view line, size_t* at) {
  size_t begin = line.find_first_not_of(' ', *at);
  if (begin == std::string_view::npos) {
    *at = line.size();
    return {};
  }
  size_t end = line.find(' ', begin);
  if (end == std::string_view::npos) end = line.size();
  *at = end;
  return line.substr(begin, end - begin);
}

// "7f..-7f.. r-xp 00000000 08:01 1234  /usr/lib/...": the header line of a mapping in smaps.
bool ParseHeader(std::string_view line, Mapping* mapping) {
  size_t at = 0;
  std::string_view range = NextField(line, &at);
  std::string_view perms = NextField(line, &at);
  NextField(line, &at);  // offset
  std::string_view device = NextField(line, &at);
  NextField(line, &at);  // inode
  std::string_view path = NextField(line, &at);
  size_t dash = range.find('-');
  if (dash == std::string_view::npos || perms.size() != 4 ||
      device.find(':') == std::string_view::npos) {
    return false;
  }
  std::string bounds(range);
  char* end = nullptr;
  mapping->start = std::strtoull(bounds.c_str(), &end, 16);
  if (end != bounds.c_str() + dash) return false;
  mapping->end = std::strtoull(bounds.c_str() + dash + 1, &end, 16);
  if (*end != '\0' || mapping->end <= mapping->start) return false;
  mapping->releasable = !path.empty() && path[0] == '/' && perms[1] == '-' && perms[3] == 'p';
  return true;
}

long KibAfter(std::string_view line, std::string_view name) {
  return std::strtol(std::string(line.substr(name.size())).c_str(), nullptr, 10);
}

// The whole of /proc/self/smaps, read with plain system calls: this runs when descriptors or
// memory may be short, where a stream would fail in ways harder to see.
bool ReadSmaps(std::string* text, std::string* error) {
  int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = std::string("cannot open /proc/self/smaps: ") + std::strerror(errno);
    return false;
  }
  char buffer[16384];
  while (true) {
    ssize_t n = read(fd, buffer, sizeof buffer);
    if (n > 0) {
      text->append(buffer, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      if (n < 0) *error = std::string("cannot read /proc/self/smaps: ") + std::strerror(errno);
      close(fd);
      return n == 0;
    }
  }
}

}  // namespace

ReleasedPages ReleaseStartupPages() {
  ReleasedPages released;
  std::string text;
  if (!ReadSmaps(&text, &released.error)) return released;
  std::vector<Mapping> mappings;
  std::string_view rest(text);
  while (!rest.empty()) {
    size_t newline = rest.find('\n');
    std::string_view line = rest.substr(0, newline);
    rest.remove_prefix(newline == std::string_view::npos ? rest.size() : newline + 1);
    Mapping mapping;
    if (line.starts_with("Rss:") && !mappings.empty()) {
      mappings.back().rss_kib = KibAfter(line, "Rss:");
    } else if (line.starts_with("Anonymous:") && !mappings.empty()) {
      mappings.back().anonymous_kib = KibAfter(line, "Anonymous:");
    } else if (line.find(':') > line.find(' ') && ParseHeader(line, &mapping)) {
      mappings.push_back(mapping);
    }
  }
  for (const Mapping& m : mappings) {
    if (!m.releasable || m.anonymous_kib != 0 || m.rss_kib == 0) continue;
    if (madvise(reinterpret_cast<void*>(m.start), m.end - m.start, MADV_DONTNEED) != 0) continue;
    ++released.mappings;
    released.kib += static_cast<size_t>(m.rss_kib);
  }
  return released;
}

}  // namespace shim::daemon
