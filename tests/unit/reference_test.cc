// The reference grammar: valid and invalid names, normalisation, prefixes, image ids.
#include "image/reference.h"

#include <gtest/gtest.h>

#include <string>

namespace shim::image {
namespace {

const std::string kHex64(64, 'a');
const std::string kDigest = "sha256:" + std::string(64, 'b');

struct ValidCase {
  std::string input;
  std::string domain;
  std::string path;
  std::string tag;
  std::string digest;
  std::string normalised;
};

void PrintTo(const ValidCase& c, std::ostream* os) {
  *os << c.input;
}

class ValidReference : public testing::TestWithParam<ValidCase> {};

TEST_P(ValidReference, ParsesAndNormalises) {
  const ValidCase& c = GetParam();
  StatusOr<Reference> ref = ParseReference(c.input);
  ASSERT_TRUE(ref.ok()) << c.input << ": " << ref.status().message();
  EXPECT_EQ(ref->domain, c.domain);
  EXPECT_EQ(ref->path, c.path);
  EXPECT_EQ(ref->tag, c.tag);
  EXPECT_EQ(ref->digest, c.digest);
  EXPECT_EQ(ref->String(), c.normalised);
  EXPECT_EQ(ref->Name(), c.domain + "/" + c.path);
  // A normalised name parses to itself.
  StatusOr<Reference> again = ParseReference(ref->String());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->String(), c.normalised);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ValidReference,
    testing::Values(
        // The examples of FACTS.md (the reference implementation's behaviour).
        ValidCase{"nginx:latest", "docker.io", "library/nginx", "latest", "",
                  "docker.io/library/nginx:latest"},
        ValidCase{"nginx:1.29.2-alpine3.22-perl", "docker.io", "library/nginx",
                  "1.29.2-alpine3.22-perl", "", "docker.io/library/nginx:1.29.2-alpine3.22-perl"},
        ValidCase{"localhost:5000/nginx:1.0", "localhost:5000", "nginx", "1.0", "",
                  "localhost:5000/nginx:1.0"},
        ValidCase{"docker.io/library/nginx", "docker.io", "library/nginx", "latest", "",
                  "docker.io/library/nginx:latest"},
        ValidCase{"registry.k8s.io/pause:3.9", "registry.k8s.io", "pause", "3.9", "",
                  "registry.k8s.io/pause:3.9"},
        // Defaults and Docker Hub.
        ValidCase{"nginx", "docker.io", "library/nginx", "latest", "",
                  "docker.io/library/nginx:latest"},
        ValidCase{"myteam/app", "docker.io", "myteam/app", "latest", "",
                  "docker.io/myteam/app:latest"},
        ValidCase{"docker.io/nginx", "docker.io", "library/nginx", "latest", "",
                  "docker.io/library/nginx:latest"},
        ValidCase{"index.docker.io/nginx:1", "docker.io", "library/nginx", "1", "",
                  "docker.io/library/nginx:1"},
        ValidCase{"registry-1.docker.io/org/app:2", "docker.io", "org/app", "2", "",
                  "docker.io/org/app:2"},
        ValidCase{"localhost/app", "localhost", "app", "latest", "", "localhost/app:latest"},
        ValidCase{"Quay.IO/org/app", "quay.io", "org/app", "latest", "", "quay.io/org/app:latest"},
        ValidCase{"[::1]:5000/app:v1", "[::1]:5000", "app", "v1", "", "[::1]:5000/app:v1"},
        // Separators inside path components.
        ValidCase{"ns/a.b_c__d-e---f0", "docker.io", "ns/a.b_c__d-e---f0", "latest", "",
                  "docker.io/ns/a.b_c__d-e---f0:latest"},
        ValidCase{"quay.io/a/b/c/d:v1.2_3-x", "quay.io", "a/b/c/d", "v1.2_3-x", "",
                  "quay.io/a/b/c/d:v1.2_3-x"},
        ValidCase{"app:_Tag", "docker.io", "library/app", "_Tag", "", "docker.io/library/app:_Tag"},
        // Digests, and tag plus digest (both kept).
        ValidCase{"nginx@" + kDigest, "docker.io", "library/nginx", "", kDigest,
                  "docker.io/library/nginx@" + kDigest},
        ValidCase{"nginx:1.25@" + kDigest, "docker.io", "library/nginx", "1.25", kDigest,
                  "docker.io/library/nginx:1.25@" + kDigest},
        ValidCase{"host.example.com:8443/team/app:v1@" + kDigest, "host.example.com:8443",
                  "team/app", "v1", kDigest, "host.example.com:8443/team/app:v1@" + kDigest},
        ValidCase{"app@sha512:" + std::string(128, 'c'), "docker.io", "library/app", "",
                  "sha512:" + std::string(128, 'c'),
                  "docker.io/library/app@sha512:" + std::string(128, 'c')},
        // The 255-character limit is on the normalised name, as the runtime sees it: an alias
        // folded away makes room (found by fuzz/fuzz_reference).
        ValidCase{"index.docker.io/team/" + std::string(240, 'a'), "docker.io",
                  "team/" + std::string(240, 'a'), "latest", "",
                  "docker.io/team/" + std::string(240, 'a') + ":latest"},
        // "localhost:5000" alone is Docker Hub's library/localhost with tag 5000.
        ValidCase{"localhost:5000", "docker.io", "library/localhost", "5000", "",
                  "docker.io/library/localhost:5000"}));

struct InvalidCase {
  std::string input;
  std::string reason;  // a part of the expected message
};

void PrintTo(const InvalidCase& c, std::ostream* os) {
  *os << c.input.substr(0, 80);
}

class InvalidReference : public testing::TestWithParam<InvalidCase> {};

TEST_P(InvalidReference, IsRejectedWithAReason) {
  const InvalidCase& c = GetParam();
  StatusOr<Reference> ref = ParseReference(c.input);
  ASSERT_FALSE(ref.ok()) << c.input << " parsed as " << ref->String();
  EXPECT_NE(ref.status().message().find(c.reason), std::string::npos)
      << "message: " << ref.status().message();
  EXPECT_NE(ref.status().message().find("invalid image reference"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(
    Table, InvalidReference,
    testing::Values(
        InvalidCase{"", "empty reference"}, InvalidCase{"Nginx", "must be lower case"},
        InvalidCase{"quay.io/Org/app", "must be lower case"},
        InvalidCase{"quay.io//app", "empty path component"},
        InvalidCase{"app/", "empty path component"}, InvalidCase{"/app", "empty path component"},
        InvalidCase{"quay.io/", "empty path component"}, InvalidCase{"a..b", "is not valid"},
        InvalidCase{"a___b", "is not valid"}, InvalidCase{"-app", "is not valid"},
        InvalidCase{"app-", "is not valid"}, InvalidCase{"my app", "is not valid"},
        InvalidCase{"nginx:", "empty tag"}, InvalidCase{"nginx:.tag", "tag \".tag\" is not valid"},
        InvalidCase{"nginx:t@g", "digest"},
        InvalidCase{"nginx:" + std::string(129, 't'), "longer than 128"},
        InvalidCase{":tag", "empty repository name"}, InvalidCase{"nginx@", "empty digest"},
        InvalidCase{"nginx@sha256", "is not \"algorithm:hex\""},
        InvalidCase{"nginx@sha256:abc", "64 lower-case hex"},
        InvalidCase{"nginx@sha256:" + std::string(64, 'A'), "found upper case"},
        InvalidCase{"nginx@sha256:" + std::string(64, 'g'), "64 lower-case hex"},
        InvalidCase{"nginx@md5:" + std::string(32, 'a'), "not supported"},
        InvalidCase{"nginx@" + kDigest + "@" + kDigest, "64 lower-case hex"},
        InvalidCase{"exa_mple.com/app", "not a valid host name"},
        InvalidCase{"-bad.com/app", "not a valid host name"},
        InvalidCase{"bad..com/app", "not a valid host name"},
        InvalidCase{"host.com:port/app", "is not a number"},
        InvalidCase{"host.com:99999/app", "between 1 and 65535"},
        InvalidCase{"host.com:/app", "is not a number"}, InvalidCase{kHex64, "image id"},
        InvalidCase{"quay.io/" + std::string(250, 'a'), "longer than 255"},
        // Short enough as given, too long once "docker.io/" (and "library/") is added: the
        // runtime would reject the rewritten or original name (found by fuzz/fuzz_reference).
        InvalidCase{"team/" + std::string(245, 'a'), "longer than 255"},
        InvalidCase{std::string(240, 'a') + ":v1", "longer than 255"}));

TEST(LooksLikeImageId, Table) {
  struct Case {
    std::string input;
    bool want;
  };
  const Case cases[] = {{"sha256:" + kHex64, true},
                        {kHex64, true},
                        {"sha256:" + kHex64.substr(1), false},
                        {"sha256:" + std::string(64, 'A'), false},
                        {"nginx:latest", false},
                        {"", false},
                        {"sha512:" + kHex64, false}};
  for (const Case& c : cases) EXPECT_EQ(LooksLikeImageId(c.input), c.want) << c.input;
}

TEST(NormalisePrefix, Table) {
  struct Case {
    std::string input;
    std::string want;  // "" = invalid
  };
  const Case cases[] = {
      {"myteam/", "docker.io/myteam/"},
      {"myteam", "docker.io/myteam/"},
      {"quay.io", "quay.io/"},
      {"quay.io/", "quay.io/"},
      {"docker.io/myteam/", "docker.io/myteam/"},
      {"index.docker.io/org", "docker.io/org/"},
      {"registry-1.docker.io/", "docker.io/"},
      {"docker.io/library/nginx", "docker.io/library/nginx/"},
      {"localhost:5000/team", "localhost:5000/team/"},
      {"Quay.io/org", "quay.io/org/"},
      {"", ""},
      {"/", ""},
      {"quay.io//", ""},
      {"MyTeam/", ""},
      {"docker.io/nginx:1", ""},
      {"nginx@" + kDigest, ""},
      {"bad_host.com/x", ""},  // has a '.', so a host, and '_' is not allowed in hosts
      {"bad..com/x", ""},
  };
  for (const Case& c : cases) {
    StatusOr<std::string> got = NormalisePrefix(c.input);
    if (c.want.empty()) {
      EXPECT_FALSE(got.ok()) << c.input << " -> " << *got;
      if (!got.ok()) {
        EXPECT_NE(got.status().message().find("prefix"), std::string::npos);
      }
    } else {
      ASSERT_TRUE(got.ok()) << c.input << ": " << got.status().message();
      EXPECT_EQ(*got, c.want) << c.input;
    }
  }
}

TEST(ValidateDomain, Table) {
  struct Case {
    std::string input;
    bool ok;
  };
  const Case cases[] = {{"registry.company.com", true},
                        {"localhost:5000", true},
                        {"10.0.0.1:443", true},
                        {"[fe80::1]:5000", true},
                        {"[fe80::1]", true},
                        {"a-b.c", true},
                        {"", false},
                        {"a_b.c", false},
                        {"host:", false},
                        {"host:0", false},
                        {"[zz::1]", false},
                        {"[::1", false},
                        {".host", false},
                        {"host name", false}};
  for (const Case& c : cases) EXPECT_EQ(ValidateDomain(c.input).ok(), c.ok) << c.input;
}

TEST(CanonicalDomain, FoldsDockerHubAliasesAndCase) {
  EXPECT_EQ(CanonicalDomain("index.docker.io"), "docker.io");
  EXPECT_EQ(CanonicalDomain("Registry-1.Docker.IO"), "docker.io");
  EXPECT_EQ(CanonicalDomain("Quay.io:8443"), "quay.io:8443");
}

}  // namespace
}  // namespace shim::image
