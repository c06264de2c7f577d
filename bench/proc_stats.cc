#include "proc_stats.h"

#include <dirent.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <vector>

namespace shim::bench {

namespace {

// The number after "key:" in a /proc status-like text that starts with a newline; -1 if absent.
long long StatusField(const std::string& text, const std::string& key) {
  size_t at = text.find("\n" + key + ":");
  if (at == std::string::npos) return -1;
  return std::atoll(text.c_str() + at + key.size() + 2);
}

}  // namespace

std::optional<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

ProcSample SampleProcess(pid_t pid) {
  ProcSample sample;
  if (pid <= 0) return sample;
  std::string base = "/proc/" + std::to_string(pid);
  auto stat = ReadSmallFile(base + "/stat");
  if (!stat) return sample;
  size_t close = stat->rfind(')');
  if (close == std::string::npos) return sample;
  std::istringstream fields(stat->substr(close + 2));
  std::vector<std::string> tokens;
  std::string token;
  while (fields >> token) tokens.push_back(token);
  if (tokens.size() < 13) return sample;
  sample.ticks = std::atoll(tokens[11].c_str()) + std::atoll(tokens[12].c_str());  // 14, 15
  if (DIR* dir = opendir((base + "/task").c_str())) {
    while (dirent* entry = readdir(dir)) {
      if (entry->d_name[0] == '.') continue;
      std::string task = base + "/task/" + entry->d_name;
      if (auto sched = ReadSmallFile(task + "/schedstat"))
        sample.sched_ns += std::atoll(sched->c_str());
      if (auto status = ReadSmallFile(task + "/status")) {
        std::string text = "\n" + *status;
        sample.switches += std::max(0LL, StatusField(text, "voluntary_ctxt_switches")) +
                           std::max(0LL, StatusField(text, "nonvoluntary_ctxt_switches"));
      }
    }
    closedir(dir);
  }
  sample.valid = true;
  return sample;
}

MachineSample SampleMachine() {
  MachineSample sample;
  std::istringstream stat(ReadSmallFile("/proc/stat").value_or(""));
  std::string cpu;
  stat >> cpu;
  long long value = 0;
  for (int i = 0; i < 8 && stat >> value; ++i) {
    sample.total += value;
    if (i != 3 && i != 4) sample.busy += value;  // all but idle and iowait
  }
  return sample;
}

ProcessMemory ReadProcessMemory(pid_t pid) {
  ProcessMemory memory;
  std::string base = "/proc/" + std::to_string(pid);
  if (auto status = ReadSmallFile(base + "/status")) {
    std::string text = "\n" + *status;
    memory.rss = StatusField(text, "VmRSS");
    memory.anon = StatusField(text, "RssAnon");
    memory.file = StatusField(text, "RssFile");
    memory.shmem = StatusField(text, "RssShmem");
    memory.threads = StatusField(text, "Threads");
  }
  if (auto rollup = ReadSmallFile(base + "/smaps_rollup")) {
    memory.pss = StatusField("\n" + *rollup, "Pss");
  }
  return memory;
}

long long RssKiB(pid_t pid) {
  return ReadProcessMemory(pid).rss;
}

std::string MiB(long long kib) {
  if (kib < 0) return "?";
  std::ostringstream s;
  s << std::fixed << std::setprecision(2) << kib / 1024.0 << " MiB";
  return s.str();
}

std::string ProcessMemory::Describe() const {
  return "RssAnon " + MiB(anon) + ", RssFile " + MiB(file) + ", RssShmem " + MiB(shmem) + ", Pss " +
         MiB(pss) + ", threads " + std::to_string(threads);
}

pid_t FindProcess(const std::string& needle) {
  pid_t found = 0;
  if (DIR* dir = opendir("/proc")) {
    while (dirent* entry = readdir(dir)) {
      if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
      auto cmdline = ReadSmallFile(std::string("/proc/") + entry->d_name + "/cmdline");
      if (!cmdline) continue;
      std::replace(cmdline->begin(), cmdline->end(), '\0', ' ');
      if (cmdline->find(needle) != std::string::npos) {
        found = static_cast<pid_t>(std::atoi(entry->d_name));
        break;
      }
    }
    closedir(dir);
  }
  return found;
}

}  // namespace shim::bench
