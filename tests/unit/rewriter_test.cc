// The rewrite: which registries an image goes to, in which order, with whose credentials.
#include "image/rewriter.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "config/loader.h"
#include "image/policy.h"

namespace shim::image {
namespace {

const std::string kDigest = "sha256:" + std::string(64, 'd');

// One candidate as "image | registry | index | user" so that a table row reads in one line.
std::string Show(const Candidate& c) {
  return c.image + " | " + c.registry + " | " + std::to_string(c.registry_index) + " | " +
         (c.credentials.empty() ? "-" : c.credentials.username + ":" + c.credentials.password);
}

struct Case {
  std::string name;
  std::string yaml;
  std::string image;
  std::vector<std::string> want;
};

const char kSingle[] = "address: registry.company.com\nauth: admin:pw\n";
const char kSeveral[] = R"(
address: https://registry.company.com
auth: admin:pw
registries:
- address: https://backup-registry.company.com
  auth: backup-user:backup-pass
- address: http://mirror.local:5000
)";
const char kPrefixes[] = R"(
address: https://registry.company.com
auth: admin:pw
registries:
- address: https://team-a.example.com
  auth: a:pa
  prefixes: ["myteam/", "quay.io"]
- address: https://k8s.example.com
  prefixes: [registry.k8s.io/]
)";
const char kOnlyPrefixed[] = R"(
address: https://team-a.example.com
auth: a:pa
registries:
- address: https://k8s.example.com
  prefixes: [registry.k8s.io/]
)";
const char kWithPath[] = R"(
address: https://harbor.example.com/proxy-cache
auth: robot:pw
registries:
- address: https://harbor.example.com/other/nested
  auth: robot2:pw2
)";
const char kFallback[] = R"(
address: registry.company.com
auth: admin:pw
fallbackToOrigin: true
)";
const char kDockerHubMirror[] = R"(
address: https://registry-1.docker.io
auth: hubuser:hubpw
registries:
- address: https://registry.company.com:443
  auth: admin:pw
)";
const char kPort[] = R"(
address: https://registry.company.com:8443
auth: admin:pw
)";

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.image;
}

class RewriteTable : public testing::TestWithParam<Case> {};

TEST_P(RewriteTable, Candidates) {
  const Case& c = GetParam();
  config::LoadResult loaded = config::ParseConfig(c.yaml, "test.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.errors.front();
  StatusOr<Reference> ref = ParseReference(c.image);
  ASSERT_TRUE(ref.ok()) << ref.status().message();
  std::vector<std::string> got;
  for (const Candidate& candidate : Rewrite(*ref, *loaded.config, PullScope{}))
    got.push_back(Show(candidate));
  EXPECT_EQ(got, c.want);
}

INSTANTIATE_TEST_SUITE_P(
    Table, RewriteTable,
    testing::Values(
        // FACTS.md: drop the source host, keep the path.
        Case{"SingleDockerHub",
             kSingle,
             "nginx:latest",
             {"registry.company.com/library/nginx:latest | registry.company.com | 0 | admin:pw"}},
        Case{"SingleLongTag",
             kSingle,
             "nginx:1.29.2-alpine3.22-perl",
             {"registry.company.com/library/nginx:1.29.2-alpine3.22-perl | registry.company.com "
              "| 0 | admin:pw"}},
        Case{"SingleK8s",
             kSingle,
             "registry.k8s.io/pause:3.9",
             {"registry.company.com/pause:3.9 | registry.company.com | 0 | admin:pw"}},
        Case{"SingleLocalhost",
             kSingle,
             "localhost:5000/nginx:1.0",
             {"registry.company.com/nginx:1.0 | registry.company.com | 0 | admin:pw"}},
        Case{"SingleExplicitDockerIo",
             kSingle,
             "docker.io/library/nginx",
             {"registry.company.com/library/nginx:latest | registry.company.com | 0 | admin:pw"}},
        Case{"SeveralInOrder",
             kSeveral,
             "quay.io/org/app:1",
             {"registry.company.com/org/app:1 | registry.company.com | 0 | admin:pw",
              "backup-registry.company.com/org/app:1 | backup-registry.company.com | 1 | "
              "backup-user:backup-pass",
              "mirror.local:5000/org/app:1 | mirror.local:5000 | 2 | -"}},
        Case{"Digest",
             kSingle,
             "nginx@" + kDigest,
             {"registry.company.com/library/nginx@" + kDigest +
              " | registry.company.com | 0 | admin:pw"}},
        Case{"TagAndDigest",
             kSingle,
             "quay.io/org/app:v2@" + kDigest,
             {"registry.company.com/org/app:v2@" + kDigest +
              " | registry.company.com | 0 | admin:pw"}},
        // Prefixes: a registry with prefixes serves only images under them.
        Case{"PrefixDockerHubNamespace",
             kPrefixes,
             "myteam/app:1",
             {"registry.company.com/myteam/app:1 | registry.company.com | 0 | admin:pw",
              "team-a.example.com/myteam/app:1 | team-a.example.com | 1 | a:pa"}},
        Case{"PrefixDomain",
             kPrefixes,
             "quay.io/org/app",
             {"registry.company.com/org/app:latest | registry.company.com | 0 | admin:pw",
              "team-a.example.com/org/app:latest | team-a.example.com | 1 | a:pa"}},
        Case{"PrefixSecondRegistry",
             kPrefixes,
             "registry.k8s.io/pause:3.9",
             {"registry.company.com/pause:3.9 | registry.company.com | 0 | admin:pw",
              "k8s.example.com/pause:3.9 | k8s.example.com | 2 | -"}},
        Case{"PrefixWholeComponentOnly",
             kPrefixes,
             "myteamx/app:1",
             {"registry.company.com/myteamx/app:1 | registry.company.com | 0 | admin:pw"}},
        Case{"PrefixNoneMatches",
             kPrefixes,
             "nginx",
             {"registry.company.com/library/nginx:latest | registry.company.com | 0 | admin:pw"}},
        // A registry without prefixes serves every image.
        Case{"PrimaryWithoutPrefixesServesAll",
             kOnlyPrefixed,
             "docker.io/library/nginx:1",
             {"team-a.example.com/library/nginx:1 | team-a.example.com | 0 | a:pa"}},
        // Already on a configured registry: unchanged, with that registry's credentials.
        Case{"AlreadyOnPrimary",
             kSeveral,
             "registry.company.com/team/app:1",
             {"registry.company.com/team/app:1 | registry.company.com | 0 | admin:pw"}},
        Case{"AlreadyOnSecond",
             kSeveral,
             "backup-registry.company.com/team/app@" + kDigest,
             {"backup-registry.company.com/team/app@" + kDigest +
              " | backup-registry.company.com | 1 | backup-user:backup-pass"}},
        Case{"AlreadyOnWithPort",
             kSeveral,
             "mirror.local:5000/app",
             {"mirror.local:5000/app:latest | mirror.local:5000 | 2 | -"}},
        Case{"OtherPortIsAnotherRegistry",
             kPort,
             "registry.company.com/app:1",
             {"registry.company.com:8443/app:1 | registry.company.com:8443 | 0 | admin:pw"}},
        Case{"DefaultPortDropped",
             kDockerHubMirror,
             "registry.company.com/app:1",
             {"registry.company.com/app:1 | registry.company.com | 1 | admin:pw"}},
        // A registry with a path keeps it in the rewritten name.
        Case{"RegistryWithPath",
             kWithPath,
             "quay.io/org/app:1",
             {"harbor.example.com/proxy-cache/org/app:1 | harbor.example.com/proxy-cache | 0 | "
              "robot:pw",
              "harbor.example.com/other/nested/org/app:1 | harbor.example.com/other/nested | 1 | "
              "robot2:pw2"}},
        Case{"AlreadyUnderRegistryPath",
             kWithPath,
             "harbor.example.com/proxy-cache/org/app:1",
             {"harbor.example.com/proxy-cache/org/app:1 | harbor.example.com/proxy-cache | 0 | "
              "robot:pw"}},
        Case{"AlreadyUnderNestedPath",
             kWithPath,
             "harbor.example.com/other/nested/app:1",
             {"harbor.example.com/other/nested/app:1 | harbor.example.com/other/nested | 1 | "
              "robot2:pw2"}},
        Case{"SameHostOtherPathIsRewritten",
             kWithPath,
             "harbor.example.com/elsewhere/app:1",
             {"harbor.example.com/proxy-cache/elsewhere/app:1 | harbor.example.com/proxy-cache | "
              "0 | robot:pw",
              "harbor.example.com/other/nested/elsewhere/app:1 | "
              "harbor.example.com/other/nested | 1 | robot2:pw2"}},
        // Docker Hub aliases are one registry.
        Case{"DockerHubAliasImage",
             kDockerHubMirror,
             "index.docker.io/library/nginx:1",
             {"docker.io/library/nginx:1 | docker.io | 0 | hubuser:hubpw"}},
        Case{"DockerHubShortName",
             kDockerHubMirror,
             "nginx",
             {"docker.io/library/nginx:latest | docker.io | 0 | hubuser:hubpw"}},
        Case{"DockerHubOtherImageGoesToRegistries",
             kDockerHubMirror,
             "quay.io/a/b:1",
             {"docker.io/a/b:1 | docker.io | 0 | hubuser:hubpw",
              "registry.company.com/a/b:1 | registry.company.com | 1 | admin:pw"}},
        // fallbackToOrigin: the original comes last, without configured credentials.
        Case{"FallbackOn",
             kFallback,
             "registry.k8s.io/pause:3.9",
             {"registry.company.com/pause:3.9 | registry.company.com | 0 | admin:pw",
              "registry.k8s.io/pause:3.9 | registry.k8s.io | -1 | -"}},
        Case{"FallbackOnDockerHub",
             kFallback,
             "nginx",
             {"registry.company.com/library/nginx:latest | registry.company.com | 0 | admin:pw",
              "docker.io/library/nginx:latest | docker.io | -1 | -"}},
        Case{"FallbackOff",
             kSingle,
             "registry.k8s.io/pause:3.9",
             {"registry.company.com/pause:3.9 | registry.company.com | 0 | admin:pw"}},
        Case{"FallbackOnAlreadyOnRegistry",
             kFallback,
             "registry.company.com/app:1",
             {"registry.company.com/app:1 | registry.company.com | 0 | admin:pw"}}),
    [](const testing::TestParamInfo<Case>& info) { return info.param.name; });

TEST(Rewrite, NoRegistryServesTheImageLeavesTheOriginalOnly) {
  config::LoadResult loaded = config::ParseConfig(R"(
address: https://k8s.example.com
registries:
- address: https://team.example.com
  prefixes: [myteam/]
)",
                                                  "t.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.errors.front();
  // The primary has no prefixes, so give it some through a copy of the value.
  config::Config config = *loaded.config;
  config.registries[0].prefixes = {"registry.k8s.io/"};
  StatusOr<Reference> ref = ParseReference("quay.io/org/app:1");
  ASSERT_TRUE(ref.ok());
  std::vector<Candidate> got = Rewrite(*ref, config, PullScope{});
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].image, "quay.io/org/app:1");
  EXPECT_TRUE(got[0].is_origin());
  EXPECT_TRUE(got[0].credentials.empty());
  EXPECT_EQ(got[0].registry, "quay.io");
}

TEST(Rewrite, EmptyConfigurationKeepsTheOriginal) {
  config::Config config;
  StatusOr<Reference> ref = ParseReference("nginx");
  ASSERT_TRUE(ref.ok());
  std::vector<Candidate> got = Rewrite(*ref, config, PullScope{});
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].image, "docker.io/library/nginx:latest");
  EXPECT_EQ(got[0].registry_index, -1);
}

TEST(Rewrite, EveryCandidateParsesAsAReference) {
  config::LoadResult loaded = config::ParseConfig(kWithPath, "t.yaml");
  ASSERT_TRUE(loaded.ok());
  for (const char* image : {"nginx", "quay.io/a/b:1",
                            "localhost:5000/x@sha256:"
                            "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"}) {
    StatusOr<Reference> ref = ParseReference(image);
    ASSERT_TRUE(ref.ok()) << image;
    for (const Candidate& c : Rewrite(*ref, *loaded.config, PullScope{})) {
      StatusOr<Reference> again = ParseReference(c.image);
      ASSERT_TRUE(again.ok()) << c.image;
      EXPECT_EQ(again->String(), c.image);
    }
  }
}

const char kTenants[] = R"(
address: https://shared.example.com
auth: shared:ps
registries:
- address: https://team-a.example.com
  auth: a:pa
  namespaces: [team-a]
- address: https://tenants.example.com
  auth: t:pt
  namespaces: ["tenant-*"]
)";

std::vector<std::string> Candidates(const char* yaml, const std::string& image,
                                    const PullScope& scope) {
  config::LoadResult loaded = config::ParseConfig(yaml, "t.yaml");
  EXPECT_TRUE(loaded.ok()) << (loaded.errors.empty() ? "" : loaded.errors.front());
  StatusOr<Reference> ref = ParseReference(image);
  EXPECT_TRUE(ref.ok()) << image;
  std::vector<std::string> got;
  for (const Candidate& c : Rewrite(*ref, *loaded.config, scope)) got.push_back(Show(c));
  return got;
}

TEST(Rewrite, RegistriesWithNamespacesServeOnlyTheirPods) {
  using V = std::vector<std::string>;
  EXPECT_EQ(Candidates(kTenants, "app:1", PullScope::ForPod("team-a")),
            (V{"shared.example.com/library/app:1 | shared.example.com | 0 | shared:ps",
               "team-a.example.com/library/app:1 | team-a.example.com | 1 | a:pa"}));
  EXPECT_EQ(Candidates(kTenants, "app:1", PullScope::ForPod("tenant-blue")),
            (V{"shared.example.com/library/app:1 | shared.example.com | 0 | shared:ps",
               "tenants.example.com/library/app:1 | tenants.example.com | 2 | t:pt"}));
  // Exact names are exact; a prefix needs its '*'.
  for (const char* other : {"team-ab", "team", "tenant", "default"}) {
    EXPECT_EQ(Candidates(kTenants, "app:1", PullScope::ForPod(other)),
              V{"shared.example.com/library/app:1 | shared.example.com | 0 | shared:ps"})
        << other;
  }
  // A pull without a pod (crictl, prePull): registries without `namespaces` only.
  EXPECT_EQ(Candidates(kTenants, "app:1", PullScope::ForPod("")),
            V{"shared.example.com/library/app:1 | shared.example.com | 0 | shared:ps"});
  // Name lookups (status, remove, list, create) carry no pod: a tenant's registry is not among
  // them, so what it served is never found by kubelet's name for another namespace.
  EXPECT_EQ(Candidates(kTenants, "app:1", PullScope::Lookup()),
            V{"shared.example.com/library/app:1 | shared.example.com | 0 | shared:ps"});
}

TEST(Rewrite, NamesOnATenantsRegistryAreKnownAsSuch) {
  auto scoped = [](const std::string& image) {
    config::LoadResult loaded = config::ParseConfig(kTenants, "t.yaml");
    EXPECT_TRUE(loaded.ok());
    StatusOr<Reference> ref = ParseReference(image);
    EXPECT_TRUE(ref.ok()) << image;
    return OnNamespaceScopedRegistry(*ref, *loaded.config);
  };
  EXPECT_TRUE(scoped("team-a.example.com/x/app:1"));
  EXPECT_TRUE(scoped("tenants.example.com/library/app@sha256:" + std::string(64, 'a')));
  EXPECT_FALSE(scoped("shared.example.com/library/app:1"));
  EXPECT_FALSE(scoped("app:1"));
  EXPECT_FALSE(scoped("team-a.example.com.other/x/app:1"));
}

TEST(Rewrite, AnImageOnAnotherTenantsRegistryGetsNoneOfItsCredentials) {
  using V = std::vector<std::string>;
  EXPECT_EQ(Candidates(kTenants, "team-a.example.com/x/app:1", PullScope::ForPod("team-a")),
            V{"team-a.example.com/x/app:1 | team-a.example.com | 1 | a:pa"});
  EXPECT_EQ(Candidates(kTenants, "team-a.example.com/x/app:1", PullScope::ForPod("tenant-b")),
            V{"team-a.example.com/x/app:1 | team-a.example.com | -1 | -"});
  EXPECT_EQ(Candidates(kTenants, "team-a.example.com/x/app:1", PullScope::ForPod("")),
            V{"team-a.example.com/x/app:1 | team-a.example.com | -1 | -"});
}

std::optional<Refusal> Check(const std::string& yaml, const std::string& image) {
  config::LoadResult loaded =
      config::ParseConfig("address: registry.company.com\n" + yaml, "t.yaml");
  EXPECT_TRUE(loaded.ok()) << (loaded.errors.empty() ? "" : loaded.errors.front());
  StatusOr<Reference> ref = ParseReference(image);
  EXPECT_TRUE(ref.ok()) << image;
  return CheckPolicy(*ref, *loaded.config);
}

TEST(Policy, NamesThePolicyCannotJudgeAreRefusedOnlyUnderAPolicy) {
  auto uncheckable = [](const std::string& yaml) {
    config::LoadResult loaded =
        config::ParseConfig("address: registry.company.com\n" + yaml, "t.yaml");
    EXPECT_TRUE(loaded.ok()) << (loaded.errors.empty() ? "" : loaded.errors.front());
    return CheckUncheckable(*loaded.config);
  };
  EXPECT_FALSE(uncheckable(""));
  auto with_deny = uncheckable("deny: [docker.io/]\n");
  ASSERT_TRUE(with_deny);
  EXPECT_EQ(with_deny->metric, "unchecked");
  EXPECT_TRUE(uncheckable("allow: [registry.company.com/]\n"));
}

TEST(Policy, DenyWinsAllowLimitsAndNothingAllowsEverything) {
  EXPECT_FALSE(Check("", "anything.example.com/x:1"));
  // A prefix with a tag could never match whole components: it is rejected, not ignored.
  config::LoadResult bad = config::ParseConfig(
      "address: registry.company.com\ndeny: [\"docker.io/library/nginx:1\"]\n", "t.yaml");
  EXPECT_FALSE(bad.ok());
  const std::string good =
      "allow: [docker.io/library/, registry.company.com/]\n"
      "deny: [docker.io/library/redis]\n";
  EXPECT_FALSE(Check(good, "nginx:1"));
  EXPECT_FALSE(Check(good, "registry.company.com/team/app:2"));
  EXPECT_FALSE(Check(good, "redis-exporter:1")) << "whole path components only";
  auto denied = Check(good, "redis:7");
  ASSERT_TRUE(denied);
  EXPECT_EQ(denied->rule, "deny \"docker.io/library/redis/\" matches it");
  EXPECT_EQ(denied->metric, "deny:docker.io/library/redis/");
  EXPECT_EQ(denied->Message("redis:7"),
            "image-cri-shim: pull of redis:7 refused by the node's pull policy: deny "
            "\"docker.io/library/redis/\" matches it");
  auto unallowed = Check(good, "quay.io/org/app:1");
  ASSERT_TRUE(unallowed);
  EXPECT_EQ(unallowed->rule,
            "no `allow` entry matches it (allow: docker.io/library/, registry.company.com/)");
  EXPECT_EQ(unallowed->metric, "allow");
  // allow alone: what it lists, nothing else.
  EXPECT_FALSE(Check("allow: [registry.company.com/]\n", "registry.company.com/team/app:1"));
  auto alone = Check("allow: [registry.company.com/]\n", "nginx:1");
  ASSERT_TRUE(alone);
  EXPECT_EQ(alone->metric, "allow");
  // deny alone: everything else is allowed.
  EXPECT_TRUE(Check("deny: [quay.io]\n", "quay.io/org/app:1"));
  EXPECT_FALSE(Check("deny: [quay.io]\n", "docker.io/org/app:1"));
}

}  // namespace
}  // namespace shim::image
