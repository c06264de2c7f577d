// Status and StatusOr: the value returned at every module boundary where the world (input,
// network, files) can fail. Programming errors are not reported this way: they abort, in release
// builds too (an assert would vanish under NDEBUG and leave undefined behaviour instead).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <source_location>
#include <string>
#include <utility>
#include <version>

namespace shim {

namespace internal {

#if defined(__cpp_lib_source_location)
using SourceLocation = std::source_location;
#else
// libstdc++'s std::source_location needs __builtin_source_location, which clang 14 (the
// compiler of the fuzz targets) lacks; its older builtins give the same three facts.
class SourceLocation {
 public:
  static constexpr SourceLocation current(const char* file = __builtin_FILE(),
                                          unsigned line = __builtin_LINE(),
                                          const char* function = __builtin_FUNCTION()) noexcept {
    return SourceLocation(file, line, function);
  }
  constexpr const char* file_name() const noexcept { return file_; }
  constexpr unsigned line() const noexcept { return line_; }
  constexpr const char* function_name() const noexcept { return function_; }

 private:
  constexpr SourceLocation(const char* file, unsigned line, const char* function)
      : file_(file), line_(line), function_(function) {}
  const char* file_;
  unsigned line_;
  const char* function_;
};
#endif

// A broken REQUIRES: says where and why on stderr, then aborts (core dump, no unwinding).
[[noreturn]] inline void CheckFailed(const char* what, const std::string& detail,
                                     internal::SourceLocation where) {
  std::fprintf(stderr, "%s:%u: %s: %s%s%s\n", where.file_name(),
               static_cast<unsigned>(where.line()), where.function_name(), what,
               detail.empty() ? "" : ": ", detail.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace internal

class Status {
 public:
  Status() = default;  // OK
  static Status Ok() { return Status(); }
  static Status Error(std::string message) { return Status(std::move(message)); }

  bool ok() const { return !message_.has_value(); }
  // REQUIRES: !ok()
  const std::string& message(
      internal::SourceLocation where = internal::SourceLocation::current()) const {
    if (!message_) internal::CheckFailed("Status::message() of an OK status", "", where);
    return *message_;
  }

 private:
  explicit Status(std::string message) : message_(std::move(message)) {}
  std::optional<std::string> message_;
};

template <typename T>
class StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit
  // REQUIRES: !status.ok() (an OK status carries no value to return)
  StatusOr(Status status,  // NOLINT: implicit
           internal::SourceLocation where = internal::SourceLocation::current())
      : status_(std::move(status)) {
    if (status_.ok()) internal::CheckFailed("StatusOr built from an OK status", "", where);
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  // REQUIRES: ok()
  const T& value(internal::SourceLocation where = internal::SourceLocation::current()) const& {
    Check(where);
    return *value_;
  }
  T& value(internal::SourceLocation where = internal::SourceLocation::current()) & {
    Check(where);
    return *value_;
  }
  T&& value(internal::SourceLocation where = internal::SourceLocation::current()) && {
    Check(where);
    return std::move(*value_);
  }
  const T& operator*() const& {
    Check(internal::SourceLocation::current());
    return *value_;
  }
  const T* operator->() const {
    Check(internal::SourceLocation::current());
    return &*value_;
  }

 private:
  // The error's message goes into the crash report: messages never hold credentials.
  void Check(internal::SourceLocation where) const {
    if (!value_) internal::CheckFailed("value of a failed StatusOr", status_.message(), where);
  }

  Status status_;
  std::optional<T> value_;
};

}  // namespace shim
