// Process-wide logging setup: spdlog's default logger writing to stderr, one line per event,
// "2024-05-01T12:00:00.123Z info message key=value ...", timestamps in UTC.
//
// Code logs with spdlog::info("pull done image={} registry={}", ...): one short message, then
// key=value pairs. Credentials never go into a log line.
//
// Thread safety: Init once from main before other threads start; SetDebug and DebugEnabled may
// be called from any thread afterwards (a reload applies `debug` live).
#pragma once

#include <string>
#include <string_view>

namespace shim::log {

// Installs the default logger; debug = true enables debug-level lines.
void Init(bool debug);

// Switches debug-level lines on or off.
void SetDebug(bool on);

bool DebugEnabled();

// `text` as a quoted key=value value: "..." with backslash, quote and newline escaped, so a
// line stays machine-splittable whatever an error message contains.
std::string Quoted(std::string_view text);

}  // namespace shim::log
