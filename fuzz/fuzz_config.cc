// Fuzz target: the configuration loader (src/config/loader.h ParseConfig) on arbitrary YAML,
// and the Go-style durations it reads. Properties: never throws, never crashes; an accepted
// configuration has its primary registry, an `imageNames` that is one of its two values,
// `pin`, `allow` and `deny` entries that are normalised prefixes (each once, ending in '/'),
// `registries[].namespaces` entries that are namespace names or the start of one and '*' (each
// once), and `prePull` entries that are image references printed in the form they parse back to
// (each once, no image id); what --dry-run prints
// (ToMaskedYaml) is itself a valid configuration equal to the original up to masked passwords,
// and shows no password; a parsed duration prints in a form that parses back to the same value.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "config/loader.h"
#include "fuzz_check.h"
#include "image/reference.h"

namespace config = shim::config;

namespace {

// The configuration as --dry-run shows it: every password replaced by the mask.
config::Config Masked(config::Config c) {
  for (auto& r : c.registries) {
    if (!r.auth.empty()) r.auth.password = "****";
  }
  return c;
}

// Printable UTF-8 (tabs and newlines allowed): what the round trip is checked on. yaml-cpp
// prints other bytes in forms that do not always read back the same, which only matters for
// --dry-run output of a file that was never readable text.
bool IsPrintableUtf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f) return false;
      ++i;
      continue;
    }
    size_t n = c >= 0xc2 && c <= 0xdf   ? 1
               : c >= 0xe0 && c <= 0xef ? 2
               : c >= 0xf0 && c <= 0xf4 ? 3
                                        : 0;
    if (n == 0 || i + n >= text.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      unsigned char d = static_cast<unsigned char>(text[i + k]);
      if ((d & 0xc0) != 0x80) return false;
    }
    i += n + 1;
  }
  return true;
}

// Checked here apart from the loader's own check: a namespace name (a DNS label), or the start
// of one followed by one '*'.
bool IsNamespacePattern(std::string_view text) {
  bool prefix = text.ends_with('*');
  if (prefix) text.remove_suffix(1);
  if (text.empty()) return prefix;
  if (text.size() > 63) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  for (char c : text) {
    if (!alnum(c) && c != '-') return false;
  }
  return alnum(text.front()) && (alnum(text.back()) || (prefix && text.size() < 63));
}

template <typename Check>
void CheckEach(const char* key, const std::vector<std::string>& list, Check valid) {
  for (size_t i = 0; i < list.size(); ++i) {
    FUZZ_CHECK(valid(list[i]), "%s[%zu] \"%s\" is not in its normal form", key, i, list[i].c_str());
    for (size_t j = 0; j < i; ++j) {
      FUZZ_CHECK(list[j] != list[i], "%s \"%s\" listed twice", key, list[i].c_str());
    }
  }
}

bool IsNormalisedPrefix(const std::string& p) {
  shim::StatusOr<std::string> again = shim::image::NormalisePrefix(p);
  return p.ends_with('/') && again.ok() && *again == p;
}

bool IsNormalisedReference(const std::string& r) {
  shim::StatusOr<shim::image::Reference> again = shim::image::ParseReference(r);
  return !shim::image::LooksLikeImageId(r) && again.ok() && again->String() == r;
}

void CheckDuration(const std::string& text) {
  std::chrono::milliseconds value{};
  if (!config::ParseDuration(text, &value)) return;
  std::string printed = config::FormatDuration(value);
  std::chrono::milliseconds again{};
  FUZZ_CHECK(config::ParseDuration(printed, &again) && again == value,
             "duration \"%s\" = %lldms prints as \"%s\"", text.c_str(),
             static_cast<long long>(value.count()), printed.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  if (size <= 64) CheckDuration(text);

  config::LoadResult result = config::ParseConfig(text, "fuzz.yaml");
  if (!result.ok()) {
    FUZZ_CHECK(result.config == nullptr, "a config despite errors");
    return 0;
  }
  FUZZ_CHECK(result.config != nullptr, "ok without a config");
  const config::Config& c = *result.config;
  FUZZ_CHECK(!c.registries.empty(), "accepted without the primary registry");
  FUZZ_CHECK(c.timeout.count() > 0 && c.reload_interval.count() > 0, "non-positive duration");
  FUZZ_CHECK(c.image_names == config::ImageNames::kRequested ||
                 c.image_names == config::ImageNames::kRegistry,
             "imageNames is neither value: %d", static_cast<int>(c.image_names));
  CheckEach("pin", c.pin, IsNormalisedPrefix);
  CheckEach("allow", c.allow, IsNormalisedPrefix);
  CheckEach("deny", c.deny, IsNormalisedPrefix);
  CheckEach("prePull", c.pre_pull, IsNormalisedReference);
  for (const auto& r : c.registries) CheckEach("namespaces", r.namespaces, IsNamespacePattern);

  // No password shows: the printed form is the same whatever the passwords are.
  std::string masked = config::ToMaskedYaml(c);
  FUZZ_CHECK(masked == config::ToMaskedYaml(Masked(c)),
             "the masked configuration depends on a password:\n%s", masked.c_str());
  if (!IsPrintableUtf8(text)) return 0;
  config::LoadResult again = config::ParseConfig(masked, "masked.yaml");
  FUZZ_CHECK(again.ok(), "the masked configuration does not load: %s\n%s",
             again.errors.empty() ? "" : again.errors[0].c_str(), masked.c_str());
  FUZZ_CHECK(*again.config == Masked(c), "the masked configuration reads differently:\n%s",
             masked.c_str());
  return 0;
}
