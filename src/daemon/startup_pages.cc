#include "daemon/startup_pages.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace shim::daemon {

namespace {

struct Mapping {
  uintptr_t start = 0, end = 0;
  bool releasable = false;  // a file's pages, mapped private and never writable
  long rss_kib = 0;
  long anonymous_kib = 0;  // private copies: written at some point (relocations)
};

// "7f..-7f.. r-xp 00000000 08:01 1234  /usr/lib/...": the header line of a mapping in smaps.
bool ParseHeader(const std::string& line, Mapping* mapping) {
  std::istringstream in(line);
  std::string range, perms, offset, device, inode, path;
  if (!(in >> range >> perms >> offset >> device >> inode)) return false;
  in >> path;
  size_t dash = range.find('-');
  if (dash == std::string::npos || perms.size() != 4 || device.find(':') == std::string::npos) {
    return false;
  }
  char* end = nullptr;
  mapping->start = std::strtoull(range.c_str(), &end, 16);
  if (end != range.c_str() + dash) return false;
  mapping->end = std::strtoull(range.c_str() + dash + 1, &end, 16);
  if (*end != '\0' || mapping->end <= mapping->start) return false;
  mapping->releasable = !path.empty() && path[0] == '/' && perms[1] == '-' && perms[3] == 'p';
  return true;
}

long KibField(const std::string& line, size_t name_length) {
  return std::atol(line.c_str() + name_length);
}

}  // namespace

ReleasedPages ReleaseStartupPages() {
  std::vector<Mapping> mappings;
  std::ifstream smaps("/proc/self/smaps");
  for (std::string line; std::getline(smaps, line);) {
    Mapping mapping;
    if (line.rfind("Rss:", 0) == 0 && !mappings.empty()) {
      mappings.back().rss_kib = KibField(line, 4);
    } else if (line.rfind("Anonymous:", 0) == 0 && !mappings.empty()) {
      mappings.back().anonymous_kib = KibField(line, 10);
    } else if (line.find(':') > line.find(' ') && ParseHeader(line, &mapping)) {
      mappings.push_back(mapping);
    }
  }
  ReleasedPages released;
  for (const Mapping& m : mappings) {
    if (!m.releasable || m.anonymous_kib != 0 || m.rss_kib == 0) continue;
    if (madvise(reinterpret_cast<void*>(m.start), m.end - m.start, MADV_DONTNEED) != 0) continue;
    ++released.mappings;
    released.kib += static_cast<size_t>(m.rss_kib);
  }
  return released;
}

}  // namespace shim::daemon
