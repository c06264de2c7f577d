// Shared by the fuzz targets: FUZZ_CHECK states a property of the code under test; a failure
// prints what broke and aborts, which libFuzzer (or replay_main.cc) reports as a crash.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string_view>

#define FUZZ_CHECK(condition, ...)                                                          \
  do {                                                                                      \
    if (!(condition)) {                                                                     \
      std::fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #condition); \
      std::fprintf(stderr, "  " __VA_ARGS__);                                               \
      std::fprintf(stderr, "\n");                                                           \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)

namespace shim::fuzz {

// Printable form of fuzzer bytes for FUZZ_CHECK messages (truncated).
inline std::string_view Clip(std::string_view text) {
  return text.substr(0, 300);
}

}  // namespace shim::fuzz
