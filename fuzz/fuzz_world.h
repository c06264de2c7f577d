// Shared by the fuzz targets that run the relay: the logger and the scratch directory of the
// process-wide world they build once.
#pragma once

#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "fuzz_check.h"

namespace shim::fuzz {

// SHIM_FUZZ_LOG=1 logs at debug level to stderr; otherwise into a null sink, still at debug
// level, so every log line's formatting runs too.
inline void InstallLogger() {
  auto sink = std::getenv("SHIM_FUZZ_LOG") != nullptr
                  ? std::static_pointer_cast<spdlog::sinks::sink>(
                        std::make_shared<spdlog::sinks::stderr_sink_mt>())
                  : std::make_shared<spdlog::sinks::null_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("fuzz", sink);
  logger->set_level(spdlog::level::debug);
  spdlog::set_default_logger(logger);
}

// A fresh /tmp/shim-fuzz-XXXXXX directory.
inline std::string MakeScratchDir() {
  char tmpl[] = "/tmp/shim-fuzz-XXXXXX";
  FUZZ_CHECK(mkdtemp(tmpl) != nullptr, "mkdtemp: %s", std::strerror(errno));
  return tmpl;
}

}  // namespace shim::fuzz
