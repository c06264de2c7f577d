#include "temp_dir.h"

#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <vector>

#include "test_util.h"

namespace shim::testing {

TempDir::TempDir(std::string_view prefix) {
  std::string pattern = TempBase() + "/" + std::string(prefix) + "-XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (mkdtemp(buffer.data()) == nullptr) {
    throw std::runtime_error("mkdtemp " + pattern + ": " + strerror(errno));
  }
  path_ = buffer.data();
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  if (KeepTestDirs()) {
    std::cerr << "[harness] kept " << path_ << "\n";
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
  if (ec) std::cerr << "[harness] could not remove " << path_ << ": " << ec.message() << "\n";
}

std::string TempDir::File(std::string_view name) const {
  return path_ + "/" + std::string(name);
}

std::string TempDir::MakeDir(std::string_view name) const {
  std::string dir = File(name);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw std::runtime_error("mkdir " + dir + ": " + ec.message());
  return dir;
}

}  // namespace shim::testing
