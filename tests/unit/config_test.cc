// The configuration loader: every key, its default, every validation error, and that no
// message ever shows a password.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "config/loader.h"

namespace shim::config {
namespace {

using std::chrono::milliseconds;

LoadResult Parse(const std::string& yaml) {
  return ParseConfig(yaml, "/etc/x.yaml");
}

const char kAddr[] = "address: r.example.com\n";

std::string AllMessages(const LoadResult& result) {
  std::string out;
  for (const auto& e : result.errors) out += "error: " + e + "\n";
  for (const auto& w : result.warnings) out += "warning: " + w + "\n";
  return out;
}

TEST(Config, DefaultsWithOnlyTheRequiredAddress) {
  LoadResult result = Parse("address: registry.company.com\n");
  ASSERT_TRUE(result.ok()) << AllMessages(result);
  EXPECT_TRUE(result.warnings.empty());
  const Config& c = *result.config;
  EXPECT_EQ(c.shim_socket, "/var/run/image-cri-shim.sock");
  EXPECT_EQ(c.cri_socket, "/run/containerd/containerd.sock");
  ASSERT_EQ(c.registries.size(), 1u);
  EXPECT_EQ(c.registries[0].address, "https://registry.company.com");
  EXPECT_EQ(c.registries[0].scheme, "https");
  EXPECT_EQ(c.registries[0].host, "registry.company.com");
  EXPECT_EQ(c.registries[0].path, "");
  EXPECT_TRUE(c.registries[0].auth.empty());
  EXPECT_TRUE(c.registries[0].prefixes.empty());
  EXPECT_EQ(c.registries[0].ca_file, "");
  EXPECT_FALSE(c.registries[0].insecure_skip_verify);
  EXPECT_FALSE(c.force);
  EXPECT_FALSE(c.debug);
  EXPECT_FALSE(c.fallback_to_origin);
  EXPECT_EQ(c.timeout, std::chrono::minutes(15));
  EXPECT_EQ(c.reload_interval, std::chrono::seconds(30));
  EXPECT_TRUE(c.kube.enabled);
  EXPECT_EQ(c.kube.namespace_, "kube-system");
  EXPECT_EQ(c.kube.name, "image-cri-shim");
  EXPECT_EQ(c.kube.key, "registries.yaml");
  EXPECT_EQ(c.metrics.address, "127.0.0.1:10258");
  EXPECT_EQ(c.image_names, ImageNames::kRequested);
  EXPECT_TRUE(c.pin.empty());
  EXPECT_TRUE(c.registries[0].namespaces.empty());
  EXPECT_TRUE(c.allow.empty());
  EXPECT_TRUE(c.deny.empty());
  EXPECT_TRUE(c.pre_pull.empty());
}

TEST(Config, EveryKey) {
  LoadResult result = Parse(R"(
shim: /run/shim/shim.sock
cri: unix:///run/crio/crio.sock
address: https://registry.company.com
auth: user:password
registries:
- address: https://backup-registry.company.com
  auth: backup-user:backup-pass
  prefixes: ["docker.io/myteam/", "quay.io/"]
  namespaces: [team-b, "tenant-*"]
  ca: /etc/ssl/backup-ca.pem
  insecureSkipVerify: true
- address: http://mirror.local:5000/cache/
force: true
debug: true
timeout: 1h30m
reloadInterval: 10s
fallbackToOrigin: true
imageNames: registry
pin: [registry.k8s.io/pause, registry.company.com/platform/]
allow: [registry.company.com, registry.k8s.io/]
deny: [docker.io/library/busybox]
prePull: [registry.k8s.io/pause:3.9, nginx]
configMap:
  enabled: false
  namespace: infra
  name: shim-config
  key: config.yaml
metricsAddress: 0.0.0.0:9100
)");
  ASSERT_TRUE(result.ok()) << AllMessages(result);
  const Config& c = *result.config;
  EXPECT_EQ(c.shim_socket, "/run/shim/shim.sock");
  EXPECT_EQ(c.cri_socket, "/run/crio/crio.sock");
  ASSERT_EQ(c.registries.size(), 3u);
  EXPECT_EQ(c.registries[0].auth.username, "user");
  EXPECT_EQ(c.registries[0].auth.password, "password");
  const Registry& backup = c.registries[1];
  EXPECT_EQ(backup.address, "https://backup-registry.company.com");
  EXPECT_EQ(backup.auth.username, "backup-user");
  EXPECT_EQ(backup.auth.password, "backup-pass");
  EXPECT_EQ(backup.prefixes, (std::vector<std::string>{"docker.io/myteam/", "quay.io/"}));
  EXPECT_EQ(backup.namespaces, (std::vector<std::string>{"team-b", "tenant-*"}));
  EXPECT_EQ(backup.ca_file, "/etc/ssl/backup-ca.pem");
  EXPECT_TRUE(backup.insecure_skip_verify);
  const Registry& mirror = c.registries[2];
  EXPECT_EQ(mirror.address, "http://mirror.local:5000/cache");
  EXPECT_EQ(mirror.scheme, "http");
  EXPECT_EQ(mirror.host, "mirror.local:5000");
  EXPECT_EQ(mirror.path, "/cache");
  EXPECT_TRUE(mirror.auth.empty());
  EXPECT_TRUE(c.force);
  EXPECT_TRUE(c.debug);
  EXPECT_TRUE(c.fallback_to_origin);
  EXPECT_EQ(c.timeout, std::chrono::minutes(90));
  EXPECT_EQ(c.reload_interval, std::chrono::seconds(10));
  EXPECT_FALSE(c.kube.enabled);
  EXPECT_EQ(c.kube.namespace_, "infra");
  EXPECT_EQ(c.kube.name, "shim-config");
  EXPECT_EQ(c.kube.key, "config.yaml");
  EXPECT_EQ(c.metrics.address, "0.0.0.0:9100");
  EXPECT_EQ(c.image_names, ImageNames::kRegistry);
  EXPECT_EQ(c.pin,
            (std::vector<std::string>{"registry.k8s.io/pause/", "registry.company.com/platform/"}));
  EXPECT_EQ(c.allow, (std::vector<std::string>{"registry.company.com/", "registry.k8s.io/"}));
  EXPECT_EQ(c.deny, std::vector<std::string>{"docker.io/library/busybox/"});
  EXPECT_EQ(c.pre_pull, (std::vector<std::string>{"registry.k8s.io/pause:3.9",
                                                  "docker.io/library/nginx:latest"}));
  EXPECT_TRUE(mirror.namespaces.empty());
  // The CA file does not exist here: a warning, not an error.
  ASSERT_EQ(result.warnings.size(), 1u);
  EXPECT_NE(result.warnings[0].find("registries[0].ca"), std::string::npos);
}

TEST(Config, MetricsCanBeTurnedOff) {
  LoadResult result = Parse("address: r.example.com\nmetricsAddress: \"\"\n");
  ASSERT_TRUE(result.ok()) << AllMessages(result);
  EXPECT_EQ(result.config->metrics.address, "");
}

TEST(Config, PasswordMaySpanColons) {
  LoadResult result = Parse("address: r.example.com\nauth: \"admin:pa:ss:word:\"\n");
  ASSERT_TRUE(result.ok()) << AllMessages(result);
  EXPECT_EQ(result.config->registries[0].auth.username, "admin");
  EXPECT_EQ(result.config->registries[0].auth.password, "pa:ss:word:");
}

TEST(Config, EmptyAuthIsAnonymous) {
  for (const char* yaml :
       {"address: r.example.com\nauth: \"\"\n", "address: r.example.com\nauth:\n"}) {
    LoadResult result = Parse(yaml);
    ASSERT_TRUE(result.ok()) << AllMessages(result);
    EXPECT_TRUE(result.config->registries[0].auth.empty()) << yaml;
  }
}

TEST(Config, AddressNormalisation) {
  struct Case {
    std::string input, address, scheme, host, path;
  };
  const Case cases[] = {
      {"registry.company.com", "https://registry.company.com", "https", "registry.company.com", ""},
      {"HTTPS://Registry.Company.COM/", "https://registry.company.com", "https",
       "registry.company.com", ""},
      {"https://registry.company.com:443", "https://registry.company.com", "https",
       "registry.company.com", ""},
      {"http://registry.company.com:80", "http://registry.company.com", "http",
       "registry.company.com", ""},
      {"http://registry.company.com:443", "http://registry.company.com:443", "http",
       "registry.company.com:443", ""},
      {"https://harbor.example.com/proxy-cache", "https://harbor.example.com/proxy-cache", "https",
       "harbor.example.com", "/proxy-cache"},
      {"harbor.example.com:8443/a/b//", "https://harbor.example.com:8443/a/b", "https",
       "harbor.example.com:8443", "/a/b"},
      {"localhost:5000", "https://localhost:5000", "https", "localhost:5000", ""},
      {"http://localhost", "http://localhost", "http", "localhost", ""},
      {"https://index.docker.io", "https://index.docker.io", "https", "docker.io", ""},
      {"https://registry-1.docker.io", "https://registry-1.docker.io", "https", "docker.io", ""},
      {"https://[fd00::1]:5000", "https://[fd00::1]:5000", "https", "[fd00::1]:5000", ""},
  };
  for (const Case& c : cases) {
    LoadResult result = Parse("address: \"" + c.input + "\"\n");
    ASSERT_TRUE(result.ok()) << c.input << "\n" << AllMessages(result);
    const Registry& r = result.config->registries[0];
    EXPECT_EQ(r.address, c.address) << c.input;
    EXPECT_EQ(r.scheme, c.scheme) << c.input;
    EXPECT_EQ(r.host, c.host) << c.input;
    EXPECT_EQ(r.path, c.path) << c.input;
  }
}

TEST(Config, PrefixesAreNormalised) {
  LoadResult result = Parse(R"(
address: r.example.com
registries:
- address: team.example.com
  prefixes: [myteam/, quay.io, index.docker.io/org, myteam]
)");
  ASSERT_TRUE(result.ok()) << AllMessages(result);
  EXPECT_EQ(result.config->registries[1].prefixes,
            (std::vector<std::string>{"docker.io/myteam/", "quay.io/", "docker.io/org/"}));
}

TEST(Config, ImageNamesTakesEitherValue) {
  for (const auto& [text, want] : {std::pair{"requested", ImageNames::kRequested},
                                   std::pair{"registry", ImageNames::kRegistry},
                                   std::pair{"\"registry\"", ImageNames::kRegistry}}) {
    LoadResult result = Parse(std::string(kAddr) + "imageNames: " + text + "\n");
    ASSERT_TRUE(result.ok()) << text << "\n" << AllMessages(result);
    EXPECT_TRUE(result.warnings.empty()) << AllMessages(result);
    EXPECT_EQ(result.config->image_names, want) << text;
  }
}

TEST(Config, PinIsNormalisedAndDeduplicatedLikePrefixes) {
  LoadResult result = Parse(R"(
address: r.example.com
pin:
- registry.k8s.io/pause
- registry.k8s.io/pause/
- pause
- index.docker.io/library/busybox
- docker.io/library/busybox/
- REGISTRY.company.com/platform
- quay.io
)");
  ASSERT_TRUE(result.ok()) << AllMessages(result);
  EXPECT_TRUE(result.warnings.empty()) << AllMessages(result);
  EXPECT_EQ(result.config->pin,
            (std::vector<std::string>{"registry.k8s.io/pause/", "docker.io/pause/",
                                      "docker.io/library/busybox/",
                                      "registry.company.com/platform/", "quay.io/"}));
  // The same rules as a registry's `prefixes`, entry for entry.
  LoadResult as_prefixes = Parse(R"(
address: r.example.com
registries:
- address: team.example.com
  prefixes: [registry.k8s.io/pause, registry.k8s.io/pause/, pause, index.docker.io/library/busybox,
             docker.io/library/busybox/, REGISTRY.company.com/platform, quay.io]
)");
  ASSERT_TRUE(as_prefixes.ok()) << AllMessages(as_prefixes);
  EXPECT_EQ(result.config->pin, as_prefixes.config->registries[1].prefixes);

  for (const char* empty : {"pin: []\n", "pin:\n"}) {
    LoadResult none = Parse(std::string(kAddr) + empty);
    ASSERT_TRUE(none.ok()) << empty << AllMessages(none);
    EXPECT_TRUE(none.config->pin.empty()) << empty;
  }
}

// The whole text of the errors of the new keys: key, value given, what is accepted.
TEST(Config, ImageNamesAndPinErrorsInFull) {
  struct Case {
    std::string yaml;
    std::string want;
  };
  const Case cases[] = {
      {"imageNames: Registry\n",
       "/etc/x.yaml: imageNames: \"Registry\" is not requested or registry (the name the runtime "
       "keeps a pulled image under: the one kubelet asked for, or the serving registry's)"},
      {"imageNames:\n",
       "/etc/x.yaml: imageNames: \"\" is not requested or registry (the name the runtime keeps a "
       "pulled image under: the one kubelet asked for, or the serving registry's)"},
      {"imageNames: [requested]\n",
       "/etc/x.yaml: imageNames: expected requested or registry, found a list"},
      {"pin: registry.k8s.io/pause\n",
       "/etc/x.yaml: pin: expected a list of prefixes such as [\"docker.io/myteam/\", "
       "\"quay.io/\"], found a single value"},
      {"pin: [registry.k8s.io/pause, registry.k8s.io/Pause]\n",
       "/etc/x.yaml: pin[1]: prefix \"registry.k8s.io/Pause\" is not valid: repository path must "
       "be lower case (\"Pause\")"},
      {"pin: [\"registry.k8s.io/pause:3.9\"]\n",
       "/etc/x.yaml: pin[0]: prefix \"registry.k8s.io/pause:3.9\" is not valid: a prefix takes no "
       "tag"},
      {"pin: [ok/, {a: b}]\n", "/etc/x.yaml: pin[1]: expected a string, found a map"},
  };
  for (const Case& c : cases) {
    LoadResult result = Parse(std::string(kAddr) + c.yaml);
    ASSERT_FALSE(result.ok()) << c.yaml;
    EXPECT_EQ(result.config, nullptr);
    ASSERT_EQ(result.errors.size(), 1u) << c.yaml << AllMessages(result);
    EXPECT_EQ(result.errors[0], c.want) << c.yaml;
  }
}

TEST(Config, NamespacesAreNamesOrPrefixesEachOnce) {
  const std::string longest(63, 'a');
  LoadResult result = Parse(R"(
address: r.example.com
registries:
- address: team.example.com
  namespaces:
  - team-b
  - "tenant-*"
  - team-b
  - "*"
  - 0abc
  - "a-*"
  - ")" + longest + R"("
  - ")" + longest + R"(*"
  - "tenant-*"
)");
  ASSERT_TRUE(result.ok()) << AllMessages(result);
  EXPECT_TRUE(result.warnings.empty()) << AllMessages(result);
  EXPECT_EQ(
      result.config->registries[1].namespaces,
      (std::vector<std::string>{"team-b", "tenant-*", "*", "0abc", "a-*", longest, longest + "*"}));
  for (const char* empty : {"[]", ""}) {
    LoadResult none = Parse(std::string(kAddr) + "registries:\n- address: team.example.com\n" +
                            "  namespaces: " + empty + "\n");
    ASSERT_TRUE(none.ok()) << empty << AllMessages(none);
    EXPECT_TRUE(none.config->registries[1].namespaces.empty()) << empty;
  }
}

TEST(Config, NamespacesErrorsInFull) {
  const std::string registry = std::string(kAddr) + "registries:\n- address: team.example.com\n";
  const std::string expected =
      " is not a namespace name or a namespace prefix followed by '*' (lower-case letters, "
      "digits and '-', starting and ending with a letter or digit, at most 63 characters: "
      "team-b, \"tenant-*\", \"*\")";
  struct Case {
    std::string yaml;
    std::string want;
  };
  const Case cases[] = {
      {"  namespaces: team-b\n",
       "/etc/x.yaml: registries[0].namespaces: expected a list of namespaces such as [team-b, "
       "\"tenant-*\"], found a single value"},
      {"  namespaces: {team-b: x}\n",
       "/etc/x.yaml: registries[0].namespaces: expected a list of namespaces such as [team-b, "
       "\"tenant-*\"], found a map"},
      {"  namespaces: [ok, [a]]\n",
       "/etc/x.yaml: registries[0].namespaces[1]: expected a string, found a list"},
      {"  namespaces: [~]\n",
       "/etc/x.yaml: registries[0].namespaces[0]: expected a string, found nothing"},
      {"  namespaces: [Team-B]\n",
       "/etc/x.yaml: registries[0].namespaces[0]: \"Team-B\"" + expected},
      {"  namespaces: [\"\"]\n", "/etc/x.yaml: registries[0].namespaces[0]: \"\"" + expected},
      {"  namespaces: [team_b]\n",
       "/etc/x.yaml: registries[0].namespaces[0]: \"team_b\"" + expected},
      {"  namespaces: [-team]\n", "/etc/x.yaml: registries[0].namespaces[0]: \"-team\"" + expected},
      {"  namespaces: [team-]\n", "/etc/x.yaml: registries[0].namespaces[0]: \"team-\"" + expected},
      {"  namespaces: [\"-*\"]\n", "/etc/x.yaml: registries[0].namespaces[0]: \"-*\"" + expected},
      {"  namespaces: [\"te*am\"]\n",
       "/etc/x.yaml: registries[0].namespaces[0]: \"te*am\"" + expected},
      {"  namespaces: [\"tenant-**\"]\n",
       "/etc/x.yaml: registries[0].namespaces[0]: \"tenant-**\"" + expected},
      {"  namespaces: [\"*-b\"]\n", "/etc/x.yaml: registries[0].namespaces[0]: \"*-b\"" + expected},
      {"  namespaces: [team.b]\n",
       "/etc/x.yaml: registries[0].namespaces[0]: \"team.b\"" + expected},
      {"  namespaces: [" + std::string(64, 'a') + "]\n",
       "/etc/x.yaml: registries[0].namespaces[0]: \"" + std::string(64, 'a') + "\"" + expected},
      {"  namespaces: [\"" + std::string(64, 'a') + "*\"]\n",
       "/etc/x.yaml: registries[0].namespaces[0]: \"" + std::string(64, 'a') + "*\"" + expected},
      {"  namespaces: [\"" + std::string(62, 'a') + "-*\"]\n",
       "/etc/x.yaml: registries[0].namespaces[0]: \"" + std::string(62, 'a') + "-*\"" + expected},
  };
  for (const Case& c : cases) {
    LoadResult result = Parse(registry + c.yaml);
    ASSERT_FALSE(result.ok()) << c.yaml;
    EXPECT_EQ(result.config, nullptr);
    ASSERT_EQ(result.errors.size(), 1u) << c.yaml << AllMessages(result);
    EXPECT_EQ(result.errors[0], c.want) << c.yaml;
  }
  // The primary takes no per-registry keys in the file: a top-level `namespaces` is unknown.
  LoadResult top = Parse(std::string(kAddr) + "namespaces: [team-b]\n");
  ASSERT_TRUE(top.ok()) << AllMessages(top);
  ASSERT_EQ(top.warnings.size(), 1u) << AllMessages(top);
  EXPECT_TRUE(top.warnings[0].starts_with("/etc/x.yaml: namespaces: unknown key, ignored"))
      << top.warnings[0];
}

TEST(Config, AllowAndDenyAreNormalisedAndDeduplicatedLikePrefixes) {
  const char* list =
      "[registry.company.com, registry.company.com/, myteam, docker.io/myteam/, "
      "index.docker.io/library/busybox, REGISTRY.k8s.io/pause]";
  const std::vector<std::string> want = {"registry.company.com/", "docker.io/myteam/",
                                         "docker.io/library/busybox/", "registry.k8s.io/pause/"};
  LoadResult result =
      Parse(std::string(kAddr) + "allow: " + list + "\ndeny: " + list + "\npin: " + list + "\n");
  ASSERT_TRUE(result.ok()) << AllMessages(result);
  EXPECT_TRUE(result.warnings.empty()) << AllMessages(result);
  EXPECT_EQ(result.config->allow, want);
  EXPECT_EQ(result.config->deny, want);
  EXPECT_EQ(result.config->pin, want) << "the same parser as pin";

  for (const char* empty : {"allow: []\ndeny: []\n", "allow:\ndeny:\n"}) {
    LoadResult none = Parse(std::string(kAddr) + empty);
    ASSERT_TRUE(none.ok()) << empty << AllMessages(none);
    EXPECT_TRUE(none.config->allow.empty()) << empty;
    EXPECT_TRUE(none.config->deny.empty()) << empty;
  }
}

TEST(Config, PrePullIsNormalisedAndDeduplicated) {
  const std::string digest = "sha256:" + std::string(64, 'a');
  LoadResult result = Parse(std::string(kAddr) +
                            "prePull:\n"
                            "- registry.k8s.io/pause:3.9\n"
                            "- nginx\n"
                            "- docker.io/library/nginx:latest\n"
                            "- index.docker.io/nginx\n"
                            "- nginx@" +
                            digest +
                            "\n"
                            "- \"quay.io/org/app:v1@" +
                            digest +
                            "\"\n"
                            "- localhost:5000/app\n"
                            "- REGISTRY.k8s.io/pause:3.9\n"
                            "- myteam/app:2\n");
  ASSERT_TRUE(result.ok()) << AllMessages(result);
  EXPECT_TRUE(result.warnings.empty()) << AllMessages(result);
  EXPECT_EQ(
      result.config->pre_pull,
      (std::vector<std::string>{"registry.k8s.io/pause:3.9", "docker.io/library/nginx:latest",
                                "docker.io/library/nginx@" + digest, "quay.io/org/app:v1@" + digest,
                                "localhost:5000/app:latest", "docker.io/myteam/app:2"}));
  for (const char* empty : {"prePull: []\n", "prePull:\n"}) {
    LoadResult none = Parse(std::string(kAddr) + empty);
    ASSERT_TRUE(none.ok()) << empty << AllMessages(none);
    EXPECT_TRUE(none.config->pre_pull.empty()) << empty;
  }
}

// The whole text of the errors of allow, deny and prePull: key, value given, what is accepted.
TEST(Config, AllowDenyAndPrePullErrorsInFull) {
  const std::string hex(64, 'a');
  const std::string id_expected =
      " is an image id, not an image reference: give the image's name (e.g. "
      "registry.k8s.io/pause:3.9 or nginx@sha256:<64 hex>)";
  struct Case {
    std::string yaml;
    std::string want;
  };
  const Case cases[] = {
      {"allow: registry.company.com\n",
       "/etc/x.yaml: allow: expected a list of prefixes such as [\"docker.io/myteam/\", "
       "\"quay.io/\"], found a single value"},
      {"allow: [ok/, Bad/]\n",
       "/etc/x.yaml: allow[1]: prefix \"Bad/\" is not valid: repository path must be lower case "
       "(\"Bad\")"},
      {"deny: [\"docker.io/library/nginx:1.25\"]\n",
       "/etc/x.yaml: deny[0]: prefix \"docker.io/library/nginx:1.25\" is not valid: a prefix "
       "takes no tag"},
      {"deny: [\"nginx@sha256:" + hex + "\"]\n",
       "/etc/x.yaml: deny[0]: prefix \"nginx@sha256:" + hex +
           "\" is not valid: a prefix takes no digest"},
      {"deny: [{a: b}]\n", "/etc/x.yaml: deny[0]: expected a string, found a map"},
      {"deny: {a: b}\n",
       "/etc/x.yaml: deny: expected a list of prefixes such as [\"docker.io/myteam/\", "
       "\"quay.io/\"], found a map"},
      {"prePull: registry.k8s.io/pause:3.9\n",
       "/etc/x.yaml: prePull: expected a list of image references such as "
       "[registry.k8s.io/pause:3.9], found a single value"},
      {"prePull: [nginx, [a]]\n", "/etc/x.yaml: prePull[1]: expected a string, found a list"},
      {"prePull: [~]\n", "/etc/x.yaml: prePull[0]: expected a string, found nothing"},
      {"prePull: [Nginx]\n",
       "/etc/x.yaml: prePull[0]: \"Nginx\" is not an image reference: repository path must be "
       "lower case (\"Nginx\")"},
      {"prePull: [\"\"]\n",
       "/etc/x.yaml: prePull[0]: \"\" is not an image reference: empty reference"},
      {"prePull: [\"nginx:\"]\n",
       "/etc/x.yaml: prePull[0]: \"nginx:\" is not an image reference: empty tag after ':'"},
      {"prePull: [\"nginx@sha256:abc\"]\n",
       "/etc/x.yaml: prePull[0]: \"nginx@sha256:abc\" is not an image reference: digest "
       "\"sha256:abc\" is not valid: sha256 needs 64 lower-case hex digits"},
      {"prePull: [\"sha256:" + hex + "\"]\n",
       "/etc/x.yaml: prePull[0]: \"sha256:" + hex + "\"" + id_expected},
      {"prePull: [\"" + hex + "\"]\n", "/etc/x.yaml: prePull[0]: \"" + hex + "\"" + id_expected},
  };
  for (const Case& c : cases) {
    LoadResult result = Parse(std::string(kAddr) + c.yaml);
    ASSERT_FALSE(result.ok()) << c.yaml;
    EXPECT_EQ(result.config, nullptr);
    ASSERT_EQ(result.errors.size(), 1u) << c.yaml << AllMessages(result);
    EXPECT_EQ(result.errors[0], c.want) << c.yaml;
  }
}

TEST(NamespaceMatches, ExactNamesAndPrefixes) {
  const std::vector<std::string> patterns = {"team-b", "tenant-*"};
  EXPECT_TRUE(NamespaceMatches(patterns, "team-b"));
  EXPECT_TRUE(NamespaceMatches(patterns, "tenant-1"));
  EXPECT_TRUE(NamespaceMatches(patterns, "tenant-"));
  EXPECT_FALSE(NamespaceMatches(patterns, "team-bb")) << "an exact entry is not a prefix";
  EXPECT_FALSE(NamespaceMatches(patterns, "team"));
  EXPECT_FALSE(NamespaceMatches(patterns, "tenant"));
  EXPECT_FALSE(NamespaceMatches(patterns, "my-tenant-1"));
  EXPECT_FALSE(NamespaceMatches(patterns, "")) << "a pull without a pod";

  const std::vector<std::string> any = {"*"};
  EXPECT_TRUE(NamespaceMatches(any, "default"));
  EXPECT_TRUE(NamespaceMatches(any, "x"));
  EXPECT_FALSE(NamespaceMatches(any, ""));

  EXPECT_FALSE(NamespaceMatches({}, "default")) << "no patterns match nothing";
  EXPECT_FALSE(NamespaceMatches({}, ""));
  EXPECT_TRUE(NamespaceMatches({"a", "b", "default"}, "default"));
}

TEST(Config, SameHostWithDifferentPathsIsAllowed) {
  LoadResult result = Parse(R"(
address: https://harbor.example.com/hub-proxy
registries:
- address: https://harbor.example.com/quay-proxy
  prefixes: [quay.io]
)");
  ASSERT_TRUE(result.ok()) << AllMessages(result);
  EXPECT_EQ(result.config->registries.size(), 2u);
}

struct ErrorCase {
  std::string name;
  std::string yaml;
  std::string want;  // the whole message or a part of it
};

void PrintTo(const ErrorCase& c, std::ostream* os) {
  *os << c.name;
}

class ConfigError : public testing::TestWithParam<ErrorCase> {};

TEST_P(ConfigError, IsReportedWithSourceKeyAndExpectation) {
  const ErrorCase& c = GetParam();
  LoadResult result = Parse(c.yaml);
  ASSERT_FALSE(result.ok()) << c.yaml;
  EXPECT_EQ(result.config, nullptr);
  bool found = false;
  for (const std::string& e : result.errors) {
    EXPECT_TRUE(e.starts_with("/etc/x.yaml: ")) << e;
    if (e.find(c.want) != std::string::npos) found = true;
  }
  EXPECT_TRUE(found) << "want: " << c.want << "\ngot:\n" << AllMessages(result);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ConfigError,
    testing::Values(
        ErrorCase{"MissingAddress", "auth: a:b\n", "/etc/x.yaml: address: missing"},
        ErrorCase{"EmptyDocument", "", "address: missing"},
        ErrorCase{"EmptyAddress", "address: \"\"\n", "address: must not be empty"},
        ErrorCase{"NotAMap", "- a\n- b\n", "expected a map of settings at the top level"},
        ErrorCase{
            "FtpAddress",
            std::string(kAddr) + "registries:\n- address: x.example.com\n- address: ftp://x\n",
            "/etc/x.yaml: registries[1].address: \"ftp://x\" is not an http(s) URL"},
        ErrorCase{"AddressList", "address: [a, b]\n", "address: expected a string, found a list"},
        ErrorCase{"BadHost", "address: https://exa_mple.com\n", "has no valid host"},
        ErrorCase{"BadPort", "address: https://example.com:99999\n", "between 1 and 65535"},
        ErrorCase{"HostLooksLikeNamespace", "address: https://registry\n",
                  "cannot appear in image names"},
        ErrorCase{"UpperCasePath", "address: https://harbor.example.com/Proxy\n",
                  "path component \"Proxy\" cannot appear in image names"},
        ErrorCase{"Query", "address: https://example.com/?x=1\n", "must not have a query"},
        ErrorCase{"UserInfo", "address: https://u:p@example.com\n",
                  "address: must not carry credentials"},
        ErrorCase{"AuthNoColon", std::string(kAddr) + "auth: justapassword\n",
                  "auth: value is not \"user:password\""},
        ErrorCase{"AuthNoUser", std::string(kAddr) + "auth: \":pw\"\n", "auth: value is not"},
        ErrorCase{"AuthNoPassword", std::string(kAddr) + "auth: \"user:\"\n", "auth: value is not"},
        ErrorCase{"AuthMap", std::string(kAddr) + "auth: {user: a}\n",
                  "auth: expected a string \"user:password\", found a map"},
        ErrorCase{"RegistriesNotAList", std::string(kAddr) + "registries: x.example.com\n",
                  "registries: expected a list of registries"},
        ErrorCase{"RegistryNotAMap", std::string(kAddr) + "registries:\n- x.example.com\n",
                  "registries[0]: expected a map with address and auth, found a single value"},
        ErrorCase{"RegistryWithoutAddress", std::string(kAddr) + "registries:\n- auth: a:b\n",
                  "registries[0].address: missing"},
        ErrorCase{"RegistryBadAuth",
                  std::string(kAddr) + "registries:\n- address: y.example.com\n  auth: nope\n",
                  "registries[0].auth: value is not \"user:password\""},
        ErrorCase{
            "PrefixesNotAList",
            std::string(kAddr) + "registries:\n- address: y.example.com\n  prefixes: quay.io\n",
            "registries[0].prefixes: expected a list"},
        ErrorCase{
            "PrefixInvalid",
            std::string(kAddr) + "registries:\n- address: y.example.com\n  prefixes: [ok/, Bad/]\n",
            "registries[0].prefixes[1]: prefix \"Bad/\" is not valid"},
        ErrorCase{
            "PrefixWithTag",
            std::string(kAddr) +
                "registries:\n- address: y.example.com\n  prefixes: [\"docker.io/nginx:1\"]\n",
            "a prefix takes no tag"},
        ErrorCase{"PrefixNotString",
                  std::string(kAddr) + "registries:\n- address: y.example.com\n  prefixes: [[a]]\n",
                  "registries[0].prefixes[0]: expected a string, found a list"},
        ErrorCase{"InsecureNotBool",
                  std::string(kAddr) +
                      "registries:\n- address: y.example.com\n  insecureSkipVerify: maybe\n",
                  "registries[0].insecureSkipVerify: \"maybe\" is not true or false"},
        ErrorCase{"CaList",
                  std::string(kAddr) + "registries:\n- address: y.example.com\n  ca: [a]\n",
                  "registries[0].ca: expected a string, found a list"},
        ErrorCase{"DuplicateRegistry",
                  "address: https://r.example.com\nregistries:\n- address: R.example.com:443/\n",
                  "registries[0].address: \"https://r.example.com\" is the same registry as "
                  "address"},
        ErrorCase{"DuplicateDockerHubAlias",
                  "address: index.docker.io\nregistries:\n- address: registry-1.docker.io\n",
                  "is the same registry as address"},
        ErrorCase{"DuplicateKey", std::string(kAddr) + "force: true\nforce: false\n",
                  "force: appears more than once"},
        ErrorCase{"ForceNotBool", std::string(kAddr) + "force: sometimes\n",
                  "force: \"sometimes\" is not true or false"},
        ErrorCase{"DebugList", std::string(kAddr) + "debug: [true]\n",
                  "debug: expected true or false, found a list"},
        ErrorCase{"FallbackNotBool", std::string(kAddr) + "fallbackToOrigin: 2\n",
                  "fallbackToOrigin: \"2\" is not true or false"},
        ErrorCase{"TimeoutNoUnit", std::string(kAddr) + "timeout: 30\n",
                  "timeout: \"30\" is not a duration"},
        ErrorCase{"TimeoutZero", std::string(kAddr) + "timeout: 0s\n",
                  "timeout: \"0s\" must be at least 1ms"},
        ErrorCase{"TimeoutNegative", std::string(kAddr) + "timeout: -5m\n", "must be at least 1ms"},
        ErrorCase{"ReloadBadUnit", std::string(kAddr) + "reloadInterval: 5 minutes\n",
                  "reloadInterval: \"5 minutes\" is not a duration"},
        ErrorCase{"ReloadMap", std::string(kAddr) + "reloadInterval: {s: 1}\n",
                  "reloadInterval: expected a duration"},
        ErrorCase{"ShimRelative", std::string(kAddr) + "shim: shim.sock\n",
                  "shim: \"shim.sock\" is not an absolute socket path"},
        ErrorCase{"ShimEmpty", std::string(kAddr) + "shim: \"\"\n",
                  "shim: \"\" is not an absolute"},
        ErrorCase{"ShimTooLong", std::string(kAddr) + "shim: /" + std::string(120, 's') + "\n",
                  "longer than 107 characters"},
        ErrorCase{"CriList", std::string(kAddr) + "cri: [a]\n", "cri: expected a string"},
        ErrorCase{"ConfigMapNotAMap", std::string(kAddr) + "configMap: yes\n",
                  "configMap: expected a map"},
        ErrorCase{"ConfigMapEnabled", std::string(kAddr) + "configMap: {enabled: nah}\n",
                  "configMap.enabled: \"nah\" is not true or false"},
        ErrorCase{"ConfigMapNamespace",
                  std::string(kAddr) + "configMap: {namespace: Kube_System}\n",
                  "configMap.namespace: \"Kube_System\" is not a namespace name"},
        ErrorCase{"ConfigMapName", std::string(kAddr) + "configMap: {name: \"a b\"}\n",
                  "configMap.name: \"a b\" is not a ConfigMap name"},
        ErrorCase{"ConfigMapKey", std::string(kAddr) + "configMap: {key: \"a/b\"}\n",
                  "configMap.key: \"a/b\" is not a ConfigMap data key"},
        ErrorCase{"MetricsNoPort", std::string(kAddr) + "metricsAddress: localhost\n",
                  "metricsAddress: \"localhost\" is not host:port"},
        ErrorCase{"MetricsBadPort", std::string(kAddr) + "metricsAddress: \":70000\"\n",
                  "is not host:port"},
        ErrorCase{"ComplexKey", std::string(kAddr) + "? [a]\n: b\n", "a key is a list"}),
    [](const testing::TestParamInfo<ErrorCase>& info) { return info.param.name; });

TEST(Config, EveryErrorIsReportedAtOnce) {
  LoadResult result = Parse("address: ftp://x\nforce: maybe\ntimeout: soon\n");
  EXPECT_EQ(result.errors.size(), 3u) << AllMessages(result);
}

TEST(Config, UnknownKeysAreWarnings) {
  LoadResult result = Parse(R"(
address: r.example.com
adress: typo.example.com
registries:
- address: y.example.com
  prefix: [quay.io]
configMap:
  nmae: x
)");
  ASSERT_TRUE(result.ok()) << AllMessages(result);
  ASSERT_EQ(result.warnings.size(), 3u) << AllMessages(result);
  EXPECT_NE(result.warnings[0].find("/etc/x.yaml: adress: unknown key"), std::string::npos);
  EXPECT_NE(result.warnings[1].find("registries[0].prefix: unknown key"), std::string::npos);
  EXPECT_NE(result.warnings[1].find("(known keys: address, auth, prefixes, namespaces, ca, "
                                    "insecureSkipVerify)"),
            std::string::npos)
      << result.warnings[1];
  EXPECT_NE(result.warnings[2].find("configMap.nmae: unknown key"), std::string::npos);
  EXPECT_NE(
      result.warnings[0].find("fallbackToOrigin, imageNames, pin, allow, deny, prePull, configMap"),
      std::string::npos)
      << result.warnings[0];
  // Top-level registries take only address and auth.
  result = Parse("address: r.example.com\nprefixes: [quay.io]\n");
  ASSERT_TRUE(result.ok());
  ASSERT_EQ(result.warnings.size(), 1u);
  EXPECT_NE(result.warnings[0].find("prefixes: unknown key"), std::string::npos);
}

TEST(Config, SyntaxErrorNamesLineAndColumn) {
  LoadResult result = Parse("address: r.example.com\nregistries:\n- address: [unclosed\n");
  ASSERT_FALSE(result.ok());
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_NE(result.errors[0].find("/etc/x.yaml: line "), std::string::npos) << result.errors[0];
  EXPECT_NE(result.errors[0].find("column"), std::string::npos) << result.errors[0];
  EXPECT_NE(result.errors[0].find("YAML syntax error"), std::string::npos) << result.errors[0];

  result = Parse("address: r.example.com\n  bad: indent\n");
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.errors[0].find("line 2"), std::string::npos) << result.errors[0];
}

TEST(Config, PasswordNeverAppearsInAnyMessage) {
  const std::string secret = "Sup3r:Secret";
  const std::string cases[] = {
      // Bad values around a good password.
      "address: ftp://x\nauth: admin:" + secret + "\n",
      // Invalid auth values that hold the secret.
      "address: r.example.com\nauth: " + secret.substr(0, 5) + "\n",
      "address: r.example.com\nauth: \":" + secret + "\"\n",
      "address: r.example.com\nauth: [\"admin:" + secret + "\"]\n",
      "address: r.example.com\nauth: {admin: \"" + secret + "\"}\n",
      // A password in the URL.
      "address: https://admin:" + secret + "@r.example.com\n",
      // A misspelt key.
      "address: r.example.com\nauht: admin:" + secret + "\n",
      "address: r.example.com\nregistries:\n- address: y.example.com\n  password: " + secret + "\n",
      // A syntax error next to it.
      "address: r.example.com\nauth: admin:" + secret + "\n  x: [\n",
  };
  for (const std::string& yaml : cases) {
    LoadResult result = Parse(yaml);
    EXPECT_FALSE(result.errors.empty() && result.warnings.empty()) << yaml;
    std::string all = AllMessages(result);
    EXPECT_EQ(all.find(secret), std::string::npos) << all;
    EXPECT_EQ(all.find(secret.substr(0, 5)), std::string::npos) << all;
  }
}

TEST(Config, MissingFileNamesThePath) {
  LoadResult result = LoadConfigFile("/nonexistent/dir/config.yaml");
  ASSERT_FALSE(result.ok());
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_NE(result.errors[0].find("/nonexistent/dir/config.yaml"), std::string::npos);
  EXPECT_NE(result.errors[0].find("No such file or directory"), std::string::npos);
}

TEST(Config, DirectoryIsNotAFile) {
  LoadResult result = LoadConfigFile("/");
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.errors[0].find("not a regular file"), std::string::npos);
}

TEST(Config, LoadsAFileAndNamesItInMessages) {
  std::string path = testing::TempDir() + "/config_test_" + std::to_string(::getpid()) + ".yaml";
  {
    std::ofstream out(path);
    out << "address: harbor.example.com\nauth: a:b\nunknown: 1\n";
  }
  LoadResult result = LoadConfigFile(path);
  std::remove(path.c_str());
  ASSERT_TRUE(result.ok()) << AllMessages(result);
  EXPECT_EQ(result.config->registries[0].host, "harbor.example.com");
  ASSERT_EQ(result.warnings.size(), 1u);
  EXPECT_TRUE(result.warnings[0].starts_with(path + ": unknown: ")) << result.warnings[0];
}

TEST(Duration, Parse) {
  struct Case {
    std::string text;
    bool ok;
    long long ms;
  };
  const Case cases[] = {
      {"30s", true, 30000},     {"15m", true, 900000},
      {"1h30m", true, 5400000}, {"500ms", true, 500},
      {"1.5h", true, 5400000},  {"1m30.5s", true, 90500},
      {"0", true, 0},           {"2h0m0s", true, 7200000},
      {"1500us", true, 1},      {"1500\xC2\xB5s", true, 1},
      {"3000000ns", true, 3},   {"-1s", true, -1000},
      {"+2s", true, 2000},      {".5s", true, 500},
      {"", false, 0},           {"30", false, 0},
      {"s", false, 0},          {"1d", false, 0},
      {"1 s", false, 0},        {"1s2", false, 0},
      {"-", false, 0},          {"1.s", true, 1000},
      {"1e3s", false, 0},       {"99999999999h", false, 0},
  };
  for (const Case& c : cases) {
    milliseconds got{-42};
    EXPECT_EQ(ParseDuration(c.text, &got), c.ok) << c.text;
    if (c.ok) {
      EXPECT_EQ(got.count(), c.ms) << c.text;
    }
  }
}

TEST(Duration, FormatIsShortAndParsesBack) {
  struct Case {
    long long ms;
    std::string want;
  };
  const Case cases[] = {{0, "0s"},          {500, "500ms"},        {30000, "30s"},  {900000, "15m"},
                        {5400000, "1h30m"}, {90500, "1m30s500ms"}, {3600000, "1h"}, {-1000, "-1s"}};
  for (const Case& c : cases) {
    EXPECT_EQ(FormatDuration(milliseconds(c.ms)), c.want);
    milliseconds back{};
    ASSERT_TRUE(ParseDuration(c.want, &back)) << c.want;
    EXPECT_EQ(back.count(), c.ms);
  }
}

TEST(Masked, ShowsTheUserOnly) {
  EXPECT_EQ(Masked(Credentials{"admin", "secret"}), "admin:****");
  EXPECT_EQ(Masked(Credentials{}), "");
}

TEST(ToMaskedYaml, HasNoPasswordAndReadsBackAsTheSameSettings) {
  LoadResult result = Parse(R"(
address: https://registry.company.com
auth: "admin:pa:ss"
registries:
- address: http://mirror.local:5000/cache
  auth: bob:hunter2
  prefixes: [quay.io]
  namespaces: [team-b, "tenant-*", "*"]
  insecureSkipVerify: true
timeout: 90s
fallbackToOrigin: true
imageNames: registry
pin: [registry.k8s.io/pause, myteam]
allow: [registry.company.com, quay.io/org]
deny: [quay.io/org/bad]
prePull: [registry.k8s.io/pause:3.9, "nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"]
metricsAddress: ""
configMap: {enabled: false}
)");
  ASSERT_TRUE(result.ok()) << AllMessages(result);
  std::string yaml = ToMaskedYaml(*result.config);
  EXPECT_NE(
      yaml.find("fallbackToOrigin: true\nimageNames: registry\n"
                "pin: [registry.k8s.io/pause/, docker.io/myteam/]\n"
                "allow: [registry.company.com/, quay.io/org/]\n"
                "deny: [quay.io/org/bad/]\n"
                "prePull: [registry.k8s.io/pause:3.9, "
                "docker.io/library/"
                "nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef]"
                "\nconfigMap:"),
      std::string::npos)
      << yaml;
  EXPECT_NE(yaml.find("    prefixes: [quay.io/]\n    namespaces: [team-b, tenant-*, \"*\"]\n"),
            std::string::npos)
      << yaml;
  EXPECT_EQ(yaml.find("pa:ss"), std::string::npos) << yaml;
  EXPECT_EQ(yaml.find("hunter2"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("admin:****"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("bob:****"), std::string::npos) << yaml;

  LoadResult again = Parse(yaml);
  ASSERT_TRUE(again.ok()) << AllMessages(again) << yaml;
  EXPECT_TRUE(again.warnings.empty()) << AllMessages(again);
  const Config& a = *result.config;
  const Config& b = *again.config;
  ASSERT_EQ(a.registries.size(), b.registries.size());
  for (size_t i = 0; i < a.registries.size(); ++i) {
    EXPECT_EQ(a.registries[i].address, b.registries[i].address);
    EXPECT_EQ(a.registries[i].prefixes, b.registries[i].prefixes);
    EXPECT_EQ(a.registries[i].namespaces, b.registries[i].namespaces);
    EXPECT_EQ(a.registries[i].insecure_skip_verify, b.registries[i].insecure_skip_verify);
    EXPECT_EQ(b.registries[i].auth.password, "****");
  }
  EXPECT_EQ(a.timeout, b.timeout);
  EXPECT_EQ(a.fallback_to_origin, b.fallback_to_origin);
  EXPECT_EQ(a.metrics.address, b.metrics.address);
  EXPECT_EQ(a.kube.enabled, b.kube.enabled);
  EXPECT_EQ(a.shim_socket, b.shim_socket);
  EXPECT_EQ(a.image_names, b.image_names);
  EXPECT_EQ(a.pin, b.pin);
  EXPECT_EQ(a.allow, b.allow);
  EXPECT_EQ(a.deny, b.deny);
  EXPECT_EQ(a.pre_pull, b.pre_pull);
}

TEST(ToMaskedYaml, ShowsTheDefaultsOfImageNamesAndPin) {
  LoadResult result = Parse(kAddr);
  ASSERT_TRUE(result.ok()) << AllMessages(result);
  std::string yaml = ToMaskedYaml(*result.config);
  EXPECT_NE(yaml.find("\nimageNames: requested\npin: []\nallow: []\ndeny: []\nprePull: []\n"),
            std::string::npos)
      << yaml;
  Origins none;
  std::string with_origins = ToMaskedYaml(*result.config, &none);
  EXPECT_NE(with_origins.find("\nimageNames: requested  # default\npin: []  # default\n"
                              "allow: []  # default\ndeny: []  # default\n"
                              "prePull: []  # default\n"),
            std::string::npos)
      << with_origins;
  // The primary of the file has no per-registry keys, so none is printed for it.
  EXPECT_EQ(yaml.find("namespaces"), std::string::npos) << yaml;
  LoadResult backup = Parse(std::string(kAddr) + "registries:\n- address: b.example.com\n");
  ASSERT_TRUE(backup.ok()) << AllMessages(backup);
  yaml = ToMaskedYaml(*backup.config, &none);
  EXPECT_NE(yaml.find("    prefixes: []  # default\n    namespaces: []  # default\n"),
            std::string::npos)
      << yaml;
}

}  // namespace
}  // namespace shim::config
