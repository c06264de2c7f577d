#include "daemon/daemon.h"

#include <ostream>

namespace shim::daemon {

int Run(const Options&) { return 1; }

bool CheckRuntime(const config::Config&, std::ostream& out) {
  out << "runtime check: not built yet\n";
  return false;
}

}  // namespace shim::daemon
