// Gives back the mappings of code and read-only data that only start-up touched.
//
// Loading the binary and its libraries, parsing the configuration and the command line, and
// initialising OpenSSL touch pages that the running daemon never needs again, and the kernel
// maps up to 16 neighbouring pages of a file per fault. They stay mapped, and counted in the
// process's RSS, for its whole life: about 8 of the 11 MiB an idle shim holds. Once start-up is
// over, the daemon unmaps them (madvise MADV_DONTNEED on its private, read-only file mappings);
// whatever it still uses is mapped again from the page cache at the next touch, a minor fault
// per page. Mappings holding private copies of pages (relocated data made read-only afterwards)
// are left alone: unmapping those would lose the copies.
#pragma once

#include <cstddef>
#include <string>

namespace shim::daemon {

struct ReleasedPages {
  size_t mappings = 0;  // mappings unmapped
  size_t kib = 0;       // resident KiB they held
  std::string error;    // why nothing was done (e.g. out of descriptors): try again later
};

// Reads /proc/self/smaps; unmaps what it can. Safe at any time: the pages come back on demand.
ReleasedPages ReleaseStartupPages();

}  // namespace shim::daemon
