#include "image/reference.h"

#include <algorithm>
#include <string>

namespace shim::image {
namespace {

constexpr std::string_view kDockerHub = "docker.io";
constexpr size_t kNameMaxLength = 255;  // distribution's NameTotalLengthMax
constexpr size_t kTagMaxLength = 128;

bool IsLowerAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool IsAlnum(char c) {
  return IsLowerAlnum(c) || (c >= 'A' && c <= 'Z');
}
bool IsWordChar(char c) {
  return IsAlnum(c) || c == '_';
}
bool IsDigit(char c) {
  return c >= '0' && c <= '9';
}
bool IsLowerHex(char c) {
  return IsDigit(c) || (c >= 'a' && c <= 'f');
}
bool IsHex(char c) {
  return IsLowerHex(c) || (c >= 'A' && c <= 'F');
}

bool IsLowerHex64(std::string_view text) {
  return text.size() == 64 && std::all_of(text.begin(), text.end(), IsLowerHex);
}

std::string Quote(std::string_view text) {
  return "\"" + std::string(text) + "\"";
}

std::string ToLower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// One host name component: [a-zA-Z0-9] or [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9].
bool IsValidHostComponent(std::string_view component) {
  if (component.empty() || !IsAlnum(component.front()) || !IsAlnum(component.back())) {
    return false;
  }
  return std::all_of(component.begin(), component.end(),
                     [](char c) { return IsAlnum(c) || c == '-'; });
}

Status ValidatePort(std::string_view port) {
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), IsDigit)) {
    return Status::Error("port " + Quote(port) + " is not a number");
  }
  int value = std::stoi(std::string(port));
  if (value < 1 || value > 65535) {
    return Status::Error("port " + Quote(port) + " is not between 1 and 65535");
  }
  return Status::Ok();
}

// tag := [\w][\w.-]{0,127}
Status ValidateTag(std::string_view tag) {
  if (tag.empty()) return Status::Error("empty tag after ':'");
  if (tag.size() > kTagMaxLength) return Status::Error("tag longer than 128 characters");
  if (!IsWordChar(tag.front()) || !std::all_of(tag.begin(), tag.end(), [](char c) {
        return IsWordChar(c) || c == '.' || c == '-';
      })) {
    return Status::Error("tag " + Quote(tag) +
                         " is not valid (letters, digits, '_', '.' and '-', not starting with "
                         "'.' or '-')");
  }
  return Status::Ok();
}

// digest := algorithm ":" encoded; algorithm := [A-Za-z][A-Za-z0-9]* joined by [+._-].
// Like go-digest, only the registered algorithms are accepted, with their exact lengths.
Status ValidateDigest(std::string_view digest) {
  size_t colon = digest.find(':');
  if (digest.empty()) return Status::Error("empty digest after '@'");
  if (colon == std::string_view::npos) {
    return Status::Error("digest " + Quote(digest) + " is not \"algorithm:hex\"");
  }
  std::string_view algorithm = digest.substr(0, colon);
  std::string_view encoded = digest.substr(colon + 1);
  size_t want = 0;
  if (algorithm == "sha256") {
    want = 64;
  } else if (algorithm == "sha384") {
    want = 96;
  } else if (algorithm == "sha512") {
    want = 128;
  } else {
    return Status::Error("digest algorithm " + Quote(algorithm) +
                         " is not supported (sha256, sha384 or sha512)");
  }
  if (encoded.size() != want || !std::all_of(encoded.begin(), encoded.end(), IsLowerHex)) {
    bool upper = std::all_of(encoded.begin(), encoded.end(), IsHex);
    return Status::Error("digest " + Quote(digest) + " is not valid: " + std::string(algorithm) +
                         " needs " + std::to_string(want) + " lower-case hex digits" +
                         (upper && encoded.size() == want ? " (found upper case)" : ""));
  }
  return Status::Ok();
}

Status ValidatePathComponent(std::string_view component) {
  if (component.empty()) return Status::Error("empty path component");
  if (IsValidPathComponent(component)) return Status::Ok();
  if (std::any_of(component.begin(), component.end(),
                  [](char c) { return c >= 'A' && c <= 'Z'; })) {
    return Status::Error("repository path must be lower case (" + Quote(component) + ")");
  }
  return Status::Error("path component " + Quote(component) +
                       " is not valid (lower-case letters and digits, separated by '.', '_', "
                       "'__' or '-')");
}

// Validates "a/b/c" component by component.
Status ValidatePath(std::string_view path) {
  size_t start = 0;
  while (true) {
    size_t slash = path.find('/', start);
    std::string_view component = path.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (Status status = ValidatePathComponent(component); !status.ok()) return status;
    if (slash == std::string_view::npos) return Status::Ok();
    start = slash + 1;
  }
}

// A first component names a registry only if it looks like a host.
bool FirstComponentIsDomain(std::string_view component) {
  return component.find_first_of(".:") != std::string_view::npos || component == "localhost";
}

}  // namespace

std::string Reference::String() const {
  return domain + "/" + PathWithTagAndDigest();
}

std::string Reference::PathWithTagAndDigest() const {
  std::string out = path;
  if (!tag.empty()) out += ":" + tag;
  if (!digest.empty()) out += "@" + digest;
  return out;
}

bool IsValidPathComponent(std::string_view component) {
  // [a-z0-9]+ ( ( [._] | __ | -+ ) [a-z0-9]+ )*
  size_t i = 0;
  const size_t n = component.size();
  while (true) {
    size_t run = i;
    while (i < n && IsLowerAlnum(component[i])) ++i;
    if (i == run) return false;  // an alphanumeric run is required here
    if (i == n) return true;
    size_t sep = i;
    if (component[i] == '.') {
      ++i;
    } else if (component[i] == '_') {
      ++i;
      if (i < n && component[i] == '_') ++i;
    } else if (component[i] == '-') {
      while (i < n && component[i] == '-') ++i;
    }
    if (i == sep) return false;  // neither alphanumeric nor separator
  }
}

Status ValidateDomain(std::string_view domain) {
  if (domain.empty()) return Status::Error("empty registry host");
  std::string_view host = domain;
  std::string_view port;
  bool has_port = false;
  if (domain.front() == '[') {
    size_t close = domain.find(']');
    if (close == std::string_view::npos) return Status::Error("unterminated IPv6 address");
    host = domain.substr(0, close + 1);
    std::string_view rest = domain.substr(close + 1);
    std::string_view inner = host.substr(1, host.size() - 2);
    if (inner.find(':') == std::string_view::npos ||
        !std::all_of(inner.begin(), inner.end(), [](char c) { return IsHex(c) || c == ':'; })) {
      return Status::Error("host " + Quote(host) + " is not an IPv6 address");
    }
    if (!rest.empty()) {
      if (rest.front() != ':') return Status::Error("unexpected text after IPv6 address");
      has_port = true;
      port = rest.substr(1);
    }
  } else {
    size_t colon = domain.find(':');
    if (colon != std::string_view::npos) {
      host = domain.substr(0, colon);
      port = domain.substr(colon + 1);
      has_port = true;
    }
    if (host.empty()) return Status::Error("empty host name");
    size_t start = 0;
    while (true) {
      size_t dot = host.find('.', start);
      std::string_view component =
          host.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
      if (!IsValidHostComponent(component)) {
        return Status::Error("host " + Quote(host) +
                             " is not a valid host name (letters, digits and inner '-', "
                             "separated by '.')");
      }
      if (dot == std::string_view::npos) break;
      start = dot + 1;
    }
  }
  if (has_port) return ValidatePort(port);
  return Status::Ok();
}

std::string CanonicalDomain(std::string_view domain) {
  std::string lower = ToLower(domain);
  if (lower == "index.docker.io" || lower == "registry-1.docker.io") return std::string(kDockerHub);
  return lower;
}

bool IsReferenceableDomain(std::string_view domain) {
  return FirstComponentIsDomain(domain);
}

bool LooksLikeImageId(std::string_view text) {
  if (text.starts_with("sha256:")) return IsLowerHex64(text.substr(7));
  return IsLowerHex64(text);
}

StatusOr<Reference> ParseReference(std::string_view text) {
  auto fail = [&](const std::string& reason) -> StatusOr<Reference> {
    return Status::Error("invalid image reference " + Quote(text) + ": " + reason);
  };
  if (text.empty()) return fail("empty reference");
  if (IsLowerHex64(text)) {
    return fail("a 64-character hex string is an image id, not a name");
  }

  Reference ref;
  std::string_view rest = text;
  if (size_t at = rest.find('@'); at != std::string_view::npos) {
    std::string_view digest = rest.substr(at + 1);
    if (Status status = ValidateDigest(digest); !status.ok()) return fail(status.message());
    ref.digest = std::string(digest);
    rest = rest.substr(0, at);
  }
  // A tag is a ':' after the last '/': "localhost:5000/app" has none.
  size_t last_slash = rest.rfind('/');
  size_t colon = rest.find(':', last_slash == std::string_view::npos ? 0 : last_slash + 1);
  if (colon != std::string_view::npos) {
    std::string_view tag = rest.substr(colon + 1);
    if (Status status = ValidateTag(tag); !status.ok()) return fail(status.message());
    ref.tag = std::string(tag);
    rest = rest.substr(0, colon);
  }
  if (rest.empty()) return fail("empty repository name");

  std::string_view remainder = rest;
  std::string domain(kDockerHub);
  if (size_t slash = rest.find('/'); slash != std::string_view::npos) {
    std::string_view first = rest.substr(0, slash);
    if (FirstComponentIsDomain(first)) {
      if (Status status = ValidateDomain(first); !status.ok()) {
        return fail("registry " + Quote(first) + ": " + status.message());
      }
      domain = CanonicalDomain(first);
      remainder = rest.substr(slash + 1);
    }
  }
  if (Status status = ValidatePath(remainder); !status.ok()) return fail(status.message());

  ref.domain = std::move(domain);
  ref.path = std::string(remainder);
  if (ref.domain == kDockerHub && ref.path.find('/') == std::string::npos) {
    ref.path = "library/" + ref.path;
  }
  // Like distribution, the limit applies to the normalised name ("docker.io/library/x"), the
  // one the runtime checks: a name as given may grow ("x") or shrink ("index.docker.io/x").
  if (ref.Name().size() > kNameMaxLength) {
    return fail("repository name longer than 255 characters once normalised (" +
                std::to_string(ref.Name().size()) + ")");
  }
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

StatusOr<std::string> NormalisePrefix(std::string_view text) {
  auto fail = [&](const std::string& reason) -> StatusOr<std::string> {
    return Status::Error("prefix " + Quote(text) + " is not valid: " + reason);
  };
  std::string_view rest = text;
  if (rest.ends_with('/')) rest.remove_suffix(1);
  if (rest.empty()) return fail("empty prefix");
  if (rest.find('@') != std::string_view::npos) return fail("a prefix takes no digest");

  std::string domain(kDockerHub);
  std::string_view first = rest.substr(0, rest.find('/'));
  if (FirstComponentIsDomain(first)) {
    if (Status status = ValidateDomain(first); !status.ok()) {
      return fail("registry " + Quote(first) + ": " + status.message());
    }
    domain = CanonicalDomain(first);
    if (first.size() == rest.size()) return domain + "/";
    rest = rest.substr(first.size() + 1);  // "quay.io//" leaves "": an empty component
  }
  if (rest.find(':') != std::string_view::npos) return fail("a prefix takes no tag");
  if (Status status = ValidatePath(rest); !status.ok()) return fail(status.message());
  return domain + "/" + std::string(rest) + "/";
}

const std::string* MatchingPrefix(const std::vector<std::string>& prefixes,
                                  const Reference& reference) {
  if (prefixes.empty()) return nullptr;
  const std::string name_slash = reference.Name() + "/";
  for (const std::string& prefix : prefixes) {
    if (name_slash.starts_with(prefix)) return &prefix;
  }
  return nullptr;
}

}  // namespace shim::image
