// Which names an image is held under on a containerd node, and which of them are pinned. Pure
// functions; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "cri_image.pb.h"
#include "image/reference.h"

namespace shim::cri {

// The records containerd's CRI plugin creates for a pull of `reference` whose manifest (or
// index) has `target_digest`, besides the image id record, as its getRepoDigestAndTag does:
//   by tag               docker.io/library/nginx:latest  and  docker.io/library/nginx@<target>
//   by digest            docker.io/library/nginx@sha256:...                    (no tag record)
//   by tag and digest    docker.io/library/nginx@sha256:...                    (the same)
// The CRI plugin parses every name with reference.ParseDockerRef, which drops the tag of a name
// that has a digest: a record "nginx:1.25@sha256:..." would be one it never resolves. So
// RepoTags and RepoDigests read the same as after a direct pull of that name.
struct RecordNames {
  std::string tag;     // "" when the pull named a digest
  std::string digest;  // always set

  std::vector<std::string> All() const;
};
RecordNames RecordNamesFor(const image::Reference& reference, std::string_view target_digest);

// The one record a pull of `reference` is held under that names `reference` itself, as
// containerd's CRI plugin resolves it: the tag record, or with a digest (tag or not) the digest
// record "domain/path@digest".
std::string RecordNameOf(const image::Reference& reference);

// True when `name` (an image name as the runtime reports it, with tag and/or digest) lies under
// one of `pin` (normalised prefixes, see image::NormalisePrefix): whole path components only.
bool IsPinned(std::string_view name, const std::vector<std::string>& pin);

// Sets `pinned` on `image` when any of its RepoTags or RepoDigests is pinned. Returns true when
// that changed the message (so it must be re-encoded).
bool MarkPinned(imagecrishim::cri::Image& image, const std::vector<std::string>& pin);

}  // namespace shim::cri
