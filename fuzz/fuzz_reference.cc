// Fuzz target: the image reference grammar (src/image/reference.h) on arbitrary text.
// Properties: no crash or UB; a parsed reference prints a normal form that parses back to the
// same reference; a canonical registry host is still valid; a normalised prefix is a fixed point.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "image/reference.h"

using shim::fuzz::Clip;
namespace image = shim::image;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);

  auto reference = image::ParseReference(text);
  if (reference.ok()) {
    const image::Reference& r = *reference;
    FUZZ_CHECK(!r.domain.empty() && !r.path.empty(), "input \"%.*s\"", int(Clip(text).size()),
               Clip(text).data());
    FUZZ_CHECK(!r.tag.empty() || !r.digest.empty(), "no tag and no digest");
    FUZZ_CHECK(image::IsReferenceableDomain(r.domain), "domain \"%s\"", r.domain.c_str());
    std::string normal = r.String();
    auto again = image::ParseReference(normal);
    FUZZ_CHECK(again.ok(), "normal form \"%s\" of \"%.*s\" does not parse: %s", normal.c_str(),
               int(Clip(text).size()), Clip(text).data(), again.status().message().c_str());
    FUZZ_CHECK(again->domain == r.domain && again->path == r.path && again->tag == r.tag &&
                   again->digest == r.digest,
               "\"%s\" parses to \"%s\"", normal.c_str(), again->String().c_str());
    FUZZ_CHECK(
        r.Name() + (r.tag.empty() ? "" : ":" + r.tag) + (r.digest.empty() ? "" : "@" + r.digest) ==
            normal,
        "Name/PathWithTagAndDigest disagree for \"%s\"", normal.c_str());
  } else {
    FUZZ_CHECK(!reference.status().message().empty(), "error without a message");
  }

  if (image::ValidateDomain(text).ok()) {
    std::string canonical = image::CanonicalDomain(text);
    FUZZ_CHECK(image::ValidateDomain(canonical).ok(), "canonical \"%s\" is invalid",
               canonical.c_str());
    FUZZ_CHECK(image::CanonicalDomain(canonical) == canonical, "canonical \"%s\" not a fixed point",
               canonical.c_str());
  }

  auto prefix = image::NormalisePrefix(text);
  if (prefix.ok()) {
    FUZZ_CHECK(prefix->ends_with('/'), "prefix \"%s\"", prefix->c_str());
    auto again = image::NormalisePrefix(*prefix);
    FUZZ_CHECK(again.ok() && *again == *prefix, "prefix \"%s\" is not a fixed point",
               prefix->c_str());
  }

  (void)image::IsValidPathComponent(text);
  (void)image::LooksLikeImageId(text);
  return 0;
}
