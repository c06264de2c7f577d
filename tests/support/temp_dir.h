// A private temporary directory under $SHIM_TEST_TMPDIR (set by sandbox.sh, which removes it
// even after a crash) or /tmp, removed with everything in it when the object dies
// (kept when SHIM_KEEP_TEST_DIRS=1). Paths stay short on purpose: unix socket paths must fit in
// 107 characters. For tests and test tools; one owner, not shared between threads.
#pragma once

#include <string>
#include <string_view>

namespace shim::testing {

class TempDir {
 public:
  // Creates <base>/<prefix>-XXXXXX (mode 0700); throws std::runtime_error on failure.
  explicit TempDir(std::string_view prefix = "shim");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path()/name; creates nothing.
  std::string File(std::string_view name) const;
  // Creates path()/name (and parents) and returns it.
  std::string MakeDir(std::string_view name) const;

 private:
  std::string path_;
};

}  // namespace shim::testing
