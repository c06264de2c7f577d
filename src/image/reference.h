// Image references by the distribution grammar (docker/distribution "reference" package):
// parsing, normalisation to the fully qualified form, and printing. Pure functions.
#pragma once

#include <string>
#include <string_view>

#include "util/status.h"

namespace shim::image {

struct Reference {
  std::string domain;  // "docker.io", "registry.k8s.io", "localhost:5000" (lower case)
  std::string path;    // "library/nginx", "pause"
  std::string tag;     // "latest" when neither tag nor digest was given; "" with a digest only
  std::string digest;  // "sha256:..." or ""

  // domain/path[:tag][@digest]
  std::string String() const;
  // path[:tag][@digest], without the domain
  std::string PathWithTagAndDigest() const;
};

// Parses and normalises `text`: a first component is a registry host only if it contains '.'
// or ':' or is "localhost"; docker.io, index.docker.io and registry-1.docker.io fold into
// "docker.io"; a one-component Docker Hub name gets "library/"; no tag and no digest means
// ":latest". Errors say what is wrong with the reference.
StatusOr<Reference> ParseReference(std::string_view text);

// True for what the runtime treats as an image id rather than a name: "sha256:<64 hex>" or a
// bare 64-hex string. Such values are never rewritten.
bool LooksLikeImageId(std::string_view text);

}  // namespace shim::image
