// Image references by the distribution grammar (docker/distribution "reference" package):
// parsing, normalisation to the fully qualified form, and printing. Pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

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
  // domain/path, without tag and digest
  std::string Name() const { return domain + "/" + path; }
};

// Parses and normalises `text`: a first component is a registry host only if it contains '.'
// or ':' or is "localhost"; docker.io, index.docker.io and registry-1.docker.io fold into
// "docker.io"; a one-component Docker Hub name gets "library/"; no tag and no digest means
// ":latest". Errors say what is wrong with the reference.
StatusOr<Reference> ParseReference(std::string_view text);

// True for what the runtime treats as an image id rather than a name: "sha256:<64 hex>" or a
// bare 64-hex string. Such values are never rewritten.
bool LooksLikeImageId(std::string_view text);

// The pieces of the grammar that the configuration needs too.

// Checks a registry host as it appears in image references: host[:port], where host is
// dot-separated components of letters, digits and inner '-', or a bracketed IPv6 address.
// On error, returns the reason (without the value).
Status ValidateDomain(std::string_view domain);

// Lower-cases `domain` and folds the Docker Hub aliases (index.docker.io,
// registry-1.docker.io) into "docker.io".
// REQUIRES: ValidateDomain(domain).ok()
std::string CanonicalDomain(std::string_view domain);

// True if `domain` is one that image references can name: it contains '.' or ':' or is
// "localhost" (any other first component is read as a Docker Hub namespace).
bool IsReferenceableDomain(std::string_view domain);

// True for one lower-case path component: [a-z0-9]+ joined by '.', '_', '__' or '-'+.
bool IsValidPathComponent(std::string_view component);

// Normalises a source prefix to "domain/[path/]": "myteam/" -> "docker.io/myteam/",
// "quay.io" -> "quay.io/", "index.docker.io/org" -> "docker.io/org/". No "library/" is added,
// and tags or digests are not allowed. A normalised name N matches prefix P when N + "/"
// starts with P, so prefixes match whole path components only.
StatusOr<std::string> NormalisePrefix(std::string_view text);

// The first of `prefixes` (normalised as above) that `reference` lies under, by the rule above;
// nullptr when none. Registries' `prefixes`, `pin`, `allow` and `deny` all match this way.
const std::string* MatchingPrefix(const std::vector<std::string>& prefixes,
                                  const Reference& reference);

}  // namespace shim::image
