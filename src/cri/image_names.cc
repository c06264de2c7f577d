#include "cri/image_names.h"

namespace shim::cri {

std::vector<std::string> RecordNames::All() const {
  std::vector<std::string> all;
  if (!tag.empty()) all.push_back(tag);
  if (!digest.empty() && digest != tag) all.push_back(digest);
  return all;
}

RecordNames RecordNamesFor(const image::Reference& reference, std::string_view target_digest) {
  RecordNames names;
  if (!reference.digest.empty()) {
    names.digest = RecordNameOf(reference);  // a tag beside the digest is dropped
    return names;
  }
  names.tag = reference.String();
  names.digest = reference.Name() + "@" + std::string(target_digest);
  return names;
}

std::string RecordNameOf(const image::Reference& reference) {
  if (!reference.digest.empty()) return reference.Name() + "@" + reference.digest;
  return reference.String();
}

bool IsPinned(std::string_view name, const std::vector<std::string>& pin) {
  if (pin.empty()) return false;
  auto reference = image::ParseReference(name);
  return reference.ok() && image::MatchingPrefix(pin, *reference) != nullptr;
}

bool MarkPinned(imagecrishim::cri::Image& image, const std::vector<std::string>& pin) {
  if (image.pinned() || pin.empty()) return false;
  auto any_pinned = [&](const auto& names) {
    for (const auto& name : names) {
      if (IsPinned(name, pin)) return true;
    }
    return false;
  };
  if (!any_pinned(image.repo_tags()) && !any_pinned(image.repo_digests())) return false;
  image.set_pinned(true);
  return true;
}

}  // namespace shim::cri
