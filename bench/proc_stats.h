// What cri-bench reads about processes and the machine from /proc: CPU time and context
// switches of a process, how busy the machine is, and where a process's resident memory is.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

namespace shim::bench {

std::optional<std::string> ReadSmallFile(const std::string& path);

struct ProcSample {
  long long ticks = 0;     // utime + stime of the whole process, clock ticks
  long long sched_ns = 0;  // sum over its threads of /proc/.../schedstat run time
  long long switches = 0;  // voluntary + involuntary context switches, all threads
  bool valid = false;
};
ProcSample SampleProcess(pid_t pid);

// Busy and total jiffies of the whole machine (first line of /proc/stat).
struct MachineSample {
  long long busy = 0, total = 0;
};
MachineSample SampleMachine();

// Resident memory of a process, KiB (-1 when unreadable): VmRSS and its parts, and Pss, where
// pages of shared libraries count by their share among the processes that map them.
struct ProcessMemory {
  long long rss = -1, anon = -1, file = -1, shmem = -1, pss = -1;
  long long threads = -1;
  // "RssAnon 1.20 MiB, RssFile 11.50 MiB, RssShmem 0.00 MiB, Pss 8.10 MiB, threads 4"
  std::string Describe() const;
};
ProcessMemory ReadProcessMemory(pid_t pid);
long long RssKiB(pid_t pid);  // VmRSS alone

std::string MiB(long long kib);  // "11.52 MiB"

// The pid of the process whose command line contains `needle` (containerd is started by the
// harness, which does not expose its pid); 0 when none.
pid_t FindProcess(const std::string& needle);

}  // namespace shim::bench
