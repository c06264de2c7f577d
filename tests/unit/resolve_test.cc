// config::Resolve, the one function from the configuration inputs (the local file, the ConfigMap
// payload, the Secrets it names) to a Config: every merge rule, with no thread, file watch or API
// server; and the state directory that keeps the last applied ConfigMap input.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <yaml-cpp/yaml.h>
#include "config/inputs.h"
#include "config/loader.h"
#include "config/state_dir.h"

namespace shim::config {
namespace {

const char* kFile =
    "shim: /run/shim/shim.sock\n"
    "cri: /run/containerd/containerd.sock\n"
    "# primary A, backup B: comments are the operator's\n"
    "address: https://a.example.com\n"
    "auth: \"user-a:file-pw-a\"\n"
    "registries:\n"
    "- address: https://b.example.com\n"
    "  auth: \"user-b:file-pw-b\"\n"
    "  prefixes: [docker.io/team/]\n"
    "- address: https://c.example.com/cache\n"
    "timeout: 10m\n";

ConfigInputs Inputs(const std::string& payload, std::map<std::string, DockerConfig> secrets = {}) {
  ConfigInputs inputs;
  inputs.file_path = "/etc/image-cri-shim.yaml";
  inputs.file_text = kFile;
  inputs.configmap = ConfigMapInput{.namespace_ = "kube-system",
                                    .name = "image-cri-shim",
                                    .key = "registries.yaml",
                                    .payload = payload,
                                    .secrets = std::move(secrets)};
  return inputs;
}

std::string Messages(const Resolved& r) {
  std::string out;
  for (const auto& e : r.errors) out += "error: " + e + "\n";
  for (const auto& w : r.warnings) out += "warning: " + w + "\n";
  return out;
}

std::vector<std::string> Addresses(const Config& c) {
  std::vector<std::string> out;
  for (const auto& r : c.registries) out.push_back(r.address);
  return out;
}

TEST(Resolve, TheFileAloneIsTheFile) {
  ConfigInputs inputs = Inputs("");
  inputs.configmap.reset();
  Resolved r = Resolve(inputs);
  ASSERT_TRUE(r.ok()) << Messages(r);
  EXPECT_EQ(*r.config, *ParseConfig(kFile, "x").config);
  EXPECT_EQ(r.origins["address"], "file");
  EXPECT_EQ(r.origins["registries[0].prefixes"], "file");
  EXPECT_EQ(r.origins.count("registries[1].auth"), 0u) << "not given: a default";
  EXPECT_EQ(r.origins.count("reloadInterval"), 0u);
}

TEST(Resolve, AConfigMapThatPromotesTheBackupKeepsItsCredentialsAndListsItOnce) {
  // The shape of the documented example: the ConfigMap names B as the primary, no auth.
  Resolved r = Resolve(Inputs("sealos:\n  address: https://b.example.com\n"));
  ASSERT_TRUE(r.ok()) << Messages(r);
  EXPECT_EQ(Addresses(*r.config),
            (std::vector<std::string>{"https://b.example.com", "https://c.example.com/cache"}));
  const Registry& b = r.config->registries[0];
  EXPECT_EQ(b.auth.username, "user-b") << "B's own credentials, from the file";
  EXPECT_EQ(b.prefixes, std::vector<std::string>{"docker.io/team/"});
  EXPECT_EQ(r.origins["address"], "ConfigMap");
  EXPECT_EQ(r.origins["auth"], "file");
  // A is no longer listed, so its password goes nowhere.
  for (const auto& reg : r.config->registries) EXPECT_NE(reg.auth.password, "file-pw-a");
}

TEST(Resolve, ARegistryInBothSourcesAppearsOnceWithTheConfigMapsSettingsWinning) {
  Resolved r =
      Resolve(Inputs("registries:\n"
                     "- address: https://c.example.com/cache\n"
                     "  auth: {username: cm-c, password: cm-pw-c}\n"
                     "- address: https://a.example.com\n"  // the file's primary, again
                     "  prefixes: [quay.io/]\n"
                     "- address: https://d.example.com\n"));
  ASSERT_TRUE(r.ok()) << Messages(r);
  EXPECT_EQ(Addresses(*r.config),
            (std::vector<std::string>{"https://a.example.com", "https://c.example.com/cache",
                                      "https://d.example.com"}));
  const Config& c = *r.config;
  EXPECT_EQ(c.registries[0].auth.password, "file-pw-a") << "the file's, not given by the map";
  EXPECT_EQ(c.registries[0].prefixes, std::vector<std::string>{"quay.io/"}) << "the map's";
  EXPECT_EQ(c.registries[1].auth.username, "cm-c");
  EXPECT_TRUE(c.registries[2].auth.empty());
  EXPECT_EQ(r.origins["prefixes"], "ConfigMap");
  EXPECT_EQ(r.origins["auth"], "file");
  EXPECT_EQ(r.origins["registries[0].auth"], "ConfigMap");
}

TEST(Resolve, ADuplicateInsideOneSourceIsThatSourcesError) {
  Resolved in_map = Resolve(Inputs(
      "registries:\n- address: https://d.example.com\n- address: https://D.example.com:443/\n"));
  ASSERT_FALSE(in_map.ok());
  EXPECT_NE(Messages(in_map).find("ConfigMap kube-system/image-cri-shim key registries.yaml: "
                                  "registries[1].address"),
            std::string::npos)
      << Messages(in_map);

  ConfigInputs inputs = Inputs("debug: true\n");
  std::string file = kFile;
  file.insert(file.find("timeout"), "- address: https://b.example.com\n");  // B again
  inputs.file_text = file;
  Resolved in_file = Resolve(inputs);
  ASSERT_FALSE(in_file.ok());
  EXPECT_NE(Messages(in_file).find("/etc/image-cri-shim.yaml: registries[2].address"),
            std::string::npos)
      << Messages(in_file);
}

TEST(Resolve, AbsentKeysKeepTheFilesValuesAndNodeKeysAreTheFilesOnly) {
  Resolved r = Resolve(Inputs("debug: true\nshim: /tmp/elsewhere.sock\nstateDir: /tmp/x\n"));
  ASSERT_TRUE(r.ok()) << Messages(r);
  const Config& c = *r.config;
  EXPECT_TRUE(c.debug);
  EXPECT_EQ(c.timeout, std::chrono::minutes(10));
  EXPECT_EQ(c.shim_socket, "/run/shim/shim.sock");
  EXPECT_EQ(c.state_dir, "/var/lib/image-cri-shim");
  EXPECT_EQ(Addresses(c).size(), 3u);
  EXPECT_EQ(r.origins["debug"], "ConfigMap");
  EXPECT_EQ(r.origins["timeout"], "file");
  EXPECT_NE(Messages(r).find("stateDir: belongs to the node"), std::string::npos) << Messages(r);
}

// The file of kFile with `imageNames` and `pin` of its own.
ConfigInputs InputsWithPins(const std::string& payload) {
  ConfigInputs inputs = Inputs(payload);
  inputs.file_text += "imageNames: registry\npin: [registry.k8s.io/pause, platform]\n";
  return inputs;
}

TEST(Resolve, TheConfigMapSetsImageNamesAndPin) {
  Resolved r = Resolve(Inputs("version: v1\nimageNames: registry\npin: [registry.k8s.io/pause]\n"));
  ASSERT_TRUE(r.ok()) << Messages(r);
  EXPECT_TRUE(r.warnings.empty()) << Messages(r);
  EXPECT_EQ(r.config->image_names, ImageNames::kRegistry);
  EXPECT_EQ(r.config->pin, std::vector<std::string>{"registry.k8s.io/pause/"});
  EXPECT_EQ(r.origins["imageNames"], "ConfigMap");
  EXPECT_EQ(r.origins["pin"], "ConfigMap");

  // Neither source sets them: the defaults.
  Resolved neither = Resolve(Inputs("debug: true\n"));
  ASSERT_TRUE(neither.ok()) << Messages(neither);
  EXPECT_EQ(neither.config->image_names, ImageNames::kRequested);
  EXPECT_TRUE(neither.config->pin.empty());
  EXPECT_EQ(neither.origins.count("imageNames"), 0u);
  EXPECT_EQ(neither.origins.count("pin"), 0u);
}

TEST(Resolve, TheConfigMapsImageNamesAndPinReplaceTheFilesWhole) {
  Resolved file_only = Resolve(InputsWithPins("debug: true\n"));
  ASSERT_TRUE(file_only.ok()) << Messages(file_only);
  EXPECT_EQ(file_only.config->image_names, ImageNames::kRegistry);
  EXPECT_EQ(file_only.config->pin,
            (std::vector<std::string>{"registry.k8s.io/pause/", "docker.io/platform/"}));
  EXPECT_EQ(file_only.origins["imageNames"], "file");
  EXPECT_EQ(file_only.origins["pin"], "file");

  Resolved r = Resolve(InputsWithPins("imageNames: requested\npin: [quay.io/org/base]\n"));
  ASSERT_TRUE(r.ok()) << Messages(r);
  EXPECT_EQ(r.config->image_names, ImageNames::kRequested);
  EXPECT_EQ(r.config->pin, std::vector<std::string>{"quay.io/org/base/"}) << "not joined";
  EXPECT_EQ(r.origins["imageNames"], "ConfigMap");
  EXPECT_EQ(r.origins["pin"], "ConfigMap");

  // `pin: []` (or `pin:`) in the ConfigMap empties the file's list, as `registries: []` does.
  for (const char* empty : {"pin: []\n", "pin:\n"}) {
    Resolved emptied = Resolve(InputsWithPins(empty));
    ASSERT_TRUE(emptied.ok()) << Messages(emptied);
    EXPECT_TRUE(emptied.config->pin.empty()) << empty;
    EXPECT_EQ(emptied.config->image_names, ImageNames::kRegistry) << "not given: the file's";
    EXPECT_EQ(emptied.origins["pin"], "ConfigMap");
    EXPECT_EQ(emptied.origins["imageNames"], "file");
  }
}

TEST(Resolve, ABadPinOrImageNamesInTheConfigMapRejectsThePayload) {
  const std::string source = "ConfigMap kube-system/image-cri-shim key registries.yaml: ";
  Resolved bad_pin = Resolve(InputsWithPins(
      "debug: true\npin: [registry.k8s.io/pause, \"docker.io/library/nginx:1.25\"]\n"));
  ASSERT_FALSE(bad_pin.ok());
  EXPECT_EQ(bad_pin.config, nullptr);
  ASSERT_EQ(bad_pin.errors.size(), 1u) << Messages(bad_pin);
  EXPECT_EQ(
      bad_pin.errors[0],
      source +
          "pin[1]: prefix \"docker.io/library/nginx:1.25\" is not valid: a prefix takes no tag");

  Resolved bad_names = Resolve(InputsWithPins("imageNames: original\n"));
  ASSERT_FALSE(bad_names.ok());
  ASSERT_EQ(bad_names.errors.size(), 1u) << Messages(bad_names);
  EXPECT_EQ(bad_names.errors[0],
            source +
                "imageNames: \"original\" is not requested or registry (the name the runtime "
                "keeps a pulled image under: the one kubelet asked for, or the serving "
                "registry's)");

  // What serves instead (the daemon keeps the last good configuration; with no ConfigMap that
  // applies, the file alone): the file's values, untouched by the rejected payload.
  ConfigInputs file_alone = InputsWithPins("");
  file_alone.configmap.reset();
  Resolved kept = Resolve(file_alone);
  ASSERT_TRUE(kept.ok()) << Messages(kept);
  EXPECT_EQ(kept.config->pin,
            (std::vector<std::string>{"registry.k8s.io/pause/", "docker.io/platform/"}));
  EXPECT_EQ(kept.config->image_names, ImageNames::kRegistry);
  EXPECT_FALSE(kept.config->debug);
}

// The file of kFile with namespaces for B and `allow`, `deny` and `prePull` of its own.
ConfigInputs InputsWithPolicy(const std::string& payload) {
  ConfigInputs inputs = Inputs(payload);
  std::string file = kFile;
  file.insert(file.find("- address: https://c.example.com"), "  namespaces: [team-b, \"ci-*\"]\n");
  inputs.file_text = file +
                     "allow: [docker.io/team, registry.k8s.io]\n"
                     "deny: [docker.io/team/bad]\n"
                     "prePull: [registry.k8s.io/pause:3.9, busybox]\n";
  return inputs;
}

TEST(Resolve, TheConfigMapSetsAllowDenyAndPrePull) {
  Resolved r = Resolve(Inputs(
      "allow: [quay.io/org]\ndeny: [quay.io/org/bad, quay.io/org/bad/]\nprePull: [nginx:1.25]\n"));
  ASSERT_TRUE(r.ok()) << Messages(r);
  EXPECT_TRUE(r.warnings.empty()) << Messages(r);
  EXPECT_EQ(r.config->allow, std::vector<std::string>{"quay.io/org/"});
  EXPECT_EQ(r.config->deny, std::vector<std::string>{"quay.io/org/bad/"});
  EXPECT_EQ(r.config->pre_pull, std::vector<std::string>{"docker.io/library/nginx:1.25"});
  for (const char* key : {"allow", "deny", "prePull"}) EXPECT_EQ(r.origins[key], "ConfigMap");

  // Neither source sets them: the defaults, printed as such.
  Resolved neither = Resolve(Inputs("debug: true\n"));
  ASSERT_TRUE(neither.ok()) << Messages(neither);
  EXPECT_TRUE(neither.config->allow.empty());
  EXPECT_TRUE(neither.config->deny.empty());
  EXPECT_TRUE(neither.config->pre_pull.empty());
  for (const char* key : {"allow", "deny", "prePull"}) EXPECT_EQ(neither.origins.count(key), 0u);
}

TEST(Resolve, TheConfigMapsAllowDenyAndPrePullReplaceTheFilesWhole) {
  Resolved file_only = Resolve(InputsWithPolicy("debug: true\n"));
  ASSERT_TRUE(file_only.ok()) << Messages(file_only);
  EXPECT_EQ(file_only.config->allow,
            (std::vector<std::string>{"docker.io/team/", "registry.k8s.io/"}));
  EXPECT_EQ(file_only.config->deny, std::vector<std::string>{"docker.io/team/bad/"});
  EXPECT_EQ(
      file_only.config->pre_pull,
      (std::vector<std::string>{"registry.k8s.io/pause:3.9", "docker.io/library/busybox:latest"}));
  for (const char* key : {"allow", "deny", "prePull"}) {
    EXPECT_EQ(file_only.origins[key], "file") << key;
  }

  Resolved r = Resolve(InputsWithPolicy("allow: [quay.io]\nprePull: [quay.io/org/app:1]\n"));
  ASSERT_TRUE(r.ok()) << Messages(r);
  EXPECT_EQ(r.config->allow, std::vector<std::string>{"quay.io/"}) << "not joined";
  EXPECT_EQ(r.config->pre_pull, std::vector<std::string>{"quay.io/org/app:1"}) << "not joined";
  EXPECT_EQ(r.config->deny, std::vector<std::string>{"docker.io/team/bad/"}) << "the file's";
  EXPECT_EQ(r.origins["allow"], "ConfigMap");
  EXPECT_EQ(r.origins["prePull"], "ConfigMap");
  EXPECT_EQ(r.origins["deny"], "file");

  // An empty list in the ConfigMap empties the file's, as `pin: []` does.
  for (const char* empty : {"allow: []\ndeny: []\nprePull: []\n", "allow:\ndeny:\nprePull:\n"}) {
    Resolved emptied = Resolve(InputsWithPolicy(empty));
    ASSERT_TRUE(emptied.ok()) << Messages(emptied);
    EXPECT_TRUE(emptied.config->allow.empty()) << empty;
    EXPECT_TRUE(emptied.config->deny.empty()) << empty;
    EXPECT_TRUE(emptied.config->pre_pull.empty()) << empty;
    for (const char* key : {"allow", "deny", "prePull"}) {
      EXPECT_EQ(emptied.origins[key], "ConfigMap") << key;
    }
  }
}

TEST(Resolve, NamespacesAreARegistrySettingMergedLikePrefixes) {
  // The map lists B with namespaces only: B keeps the file's credentials and prefixes.
  Resolved r = Resolve(
      InputsWithPolicy("registries:\n- address: https://b.example.com\n  namespaces: [team-c]\n"
                       "- address: https://d.example.com\n  namespaces: [\"*\"]\n"));
  ASSERT_TRUE(r.ok()) << Messages(r);
  ASSERT_EQ(Addresses(*r.config),
            (std::vector<std::string>{"https://a.example.com", "https://b.example.com",
                                      "https://d.example.com"}));
  const Registry& b = r.config->registries[1];
  EXPECT_EQ(b.namespaces, std::vector<std::string>{"team-c"}) << "the map's, not joined";
  EXPECT_EQ(b.auth.username, "user-b");
  EXPECT_EQ(b.prefixes, std::vector<std::string>{"docker.io/team/"});
  EXPECT_EQ(r.config->registries[2].namespaces, std::vector<std::string>{"*"});
  EXPECT_TRUE(r.config->registries[0].namespaces.empty());
  EXPECT_EQ(r.origins["registries[0].namespaces"], "ConfigMap");
  EXPECT_EQ(r.origins["registries[0].prefixes"], "file");
  EXPECT_EQ(r.origins["registries[1].namespaces"], "ConfigMap");

  // The map lists B without namespaces: the file's stay; `namespaces: []` empties them.
  Resolved kept = Resolve(InputsWithPolicy(
      "registries:\n- address: https://b.example.com\n  auth: {username: u, password: p}\n"));
  ASSERT_TRUE(kept.ok()) << Messages(kept);
  EXPECT_EQ(kept.config->registries[1].namespaces, (std::vector<std::string>{"team-b", "ci-*"}));
  EXPECT_EQ(kept.origins["registries[0].namespaces"], "file");
  Resolved emptied = Resolve(
      InputsWithPolicy("registries:\n- address: https://b.example.com\n  namespaces: []\n"));
  ASSERT_TRUE(emptied.ok()) << Messages(emptied);
  EXPECT_TRUE(emptied.config->registries[1].namespaces.empty());
  EXPECT_EQ(emptied.origins["registries[0].namespaces"], "ConfigMap");

  // A ConfigMap that promotes B keeps B's namespaces with its credentials, and prints them.
  Resolved promoted = Resolve(InputsWithPolicy("sealos:\n  address: https://b.example.com\n"));
  ASSERT_TRUE(promoted.ok()) << Messages(promoted);
  const Registry& primary = promoted.config->registries[0];
  EXPECT_EQ(primary.address, "https://b.example.com");
  EXPECT_EQ(primary.auth.username, "user-b");
  EXPECT_EQ(primary.namespaces, (std::vector<std::string>{"team-b", "ci-*"}));
  EXPECT_EQ(promoted.origins["namespaces"], "file");
  std::string printed = ToMaskedYaml(*promoted.config, &promoted.origins);
  EXPECT_NE(printed.find("\nprefixes: [docker.io/team/]  # file\n"
                         "namespaces: [team-b, ci-*]  # file\n"),
            std::string::npos)
      << printed;

  // `sealos` takes no per-registry keys: namespaces there are ignored with a warning.
  Resolved sealos = Resolve(
      InputsWithPolicy("sealos:\n  address: https://b.example.com\n  namespaces: [other]\n"));
  ASSERT_TRUE(sealos.ok()) << Messages(sealos);
  EXPECT_EQ(sealos.config->registries[0].namespaces, (std::vector<std::string>{"team-b", "ci-*"}));
  EXPECT_NE(Messages(sealos).find("sealos.namespaces: unknown key, ignored"), std::string::npos)
      << Messages(sealos);
}

TEST(Resolve, ABadPolicyValueInTheConfigMapRejectsThePayload) {
  const std::string source = "ConfigMap kube-system/image-cri-shim key registries.yaml: ";
  struct Case {
    std::string payload;
    std::string want;
  };
  const Case cases[] = {
      {"allow: [quay.io, \"quay.io/org:1\"]\n",
       source + "allow[1]: prefix \"quay.io/org:1\" is not valid: a prefix takes no tag"},
      {"deny: quay.io\n", source +
                              "deny: expected a list of prefixes such as [\"docker.io/myteam/\", "
                              "\"quay.io/\"], found a single value"},
      {"prePull: [nginx, Nginx]\n",
       source + "prePull[1]: \"Nginx\" is not an image reference: repository path must be lower "
                "case (\"Nginx\")"},
      {"prePull: [\"sha256:" + std::string(64, '0') + "\"]\n",
       source + "prePull[0]: \"sha256:" + std::string(64, '0') +
           "\" is an image id, not an image reference: give the image's name (e.g. "
           "registry.k8s.io/pause:3.9 or nginx@sha256:<64 hex>)"},
      {"registries:\n- address: https://b.example.com\n  namespaces: [Team-B]\n",
       source +
           "registries[0].namespaces[0]: \"Team-B\" is not a namespace name or a namespace "
           "prefix followed by '*' (lower-case letters, digits and '-', starting and ending with "
           "a letter or digit, at most 63 characters: team-b, \"tenant-*\", \"*\")"},
  };
  for (const Case& c : cases) {
    // The good values beside the bad one (debug) are not applied either: no config at all.
    Resolved bad = Resolve(InputsWithPolicy("debug: true\n" + c.payload));
    ASSERT_FALSE(bad.ok()) << c.payload;
    EXPECT_EQ(bad.config, nullptr);
    ASSERT_EQ(bad.errors.size(), 1u) << c.payload << Messages(bad);
    EXPECT_EQ(bad.errors[0], c.want) << c.payload;
  }

  // What serves instead (the daemon keeps the last good configuration; with no ConfigMap that
  // applies, the file alone): the file's values, untouched by the rejected payload.
  ConfigInputs file_alone = InputsWithPolicy("");
  file_alone.configmap.reset();
  Resolved kept = Resolve(file_alone);
  ASSERT_TRUE(kept.ok()) << Messages(kept);
  EXPECT_EQ(kept.config->allow, (std::vector<std::string>{"docker.io/team/", "registry.k8s.io/"}));
  EXPECT_EQ(kept.config->deny, std::vector<std::string>{"docker.io/team/bad/"});
  EXPECT_EQ(kept.config->pre_pull, (std::vector<std::string>{"registry.k8s.io/pause:3.9",
                                                             "docker.io/library/busybox:latest"}));
  EXPECT_EQ(kept.config->registries[1].namespaces, (std::vector<std::string>{"team-b", "ci-*"}));
  EXPECT_FALSE(kept.config->debug);

  // A key the payload does not know names the keys it does.
  Resolved unknown = Resolve(Inputs("prepull: [nginx]\n"));
  ASSERT_TRUE(unknown.ok()) << Messages(unknown);
  ASSERT_EQ(unknown.warnings.size(), 1u) << Messages(unknown);
  EXPECT_EQ(unknown.warnings[0],
            source +
                "prepull: unknown key, ignored (known keys: version, sealos, registries, "
                "reloadInterval, force, debug, timeout, fallbackToOrigin, imageNames, pin, allow, "
                "deny, prePull)");
}

TEST(Resolve, AnAuthAloneRotatesThePrimarysPassword) {
  Resolved r = Resolve(Inputs("sealos:\n  auth: {username: user-a, password: rotated-pw}\n"));
  ASSERT_TRUE(r.ok()) << Messages(r);
  EXPECT_EQ(r.config->registries[0].address, "https://a.example.com");
  EXPECT_EQ(r.config->registries[0].auth.password, "rotated-pw");
  EXPECT_EQ(r.origins["address"], "file");
  EXPECT_EQ(r.origins["auth"], "ConfigMap");
}

TEST(Resolve, ANewPrimaryWithoutAuthIsAnonymous) {
  Resolved r = Resolve(Inputs("sealos: {address: https://new.example.com}\n"));
  ASSERT_TRUE(r.ok()) << Messages(r);
  EXPECT_EQ(r.config->registries[0].address, "https://new.example.com");
  EXPECT_TRUE(r.config->registries[0].auth.empty()) << "A's password must not follow";
}

TEST(Resolve, APrimaryOnlyInTheConfigMapIsEnough) {
  ConfigInputs inputs = Inputs("sealos: {address: https://cm.example.com}\n");
  inputs.file_text = "cri: /run/containerd/containerd.sock\n";
  Resolved r = Resolve(inputs);
  ASSERT_TRUE(r.ok()) << Messages(r);
  EXPECT_EQ(r.config->registries[0].address, "https://cm.example.com");
  // Neither source has one: an error naming both.
  inputs.configmap->payload = "debug: true\n";
  Resolved none = Resolve(inputs);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(Messages(none).find("address: missing here and in ConfigMap"), std::string::npos)
      << Messages(none);
}

TEST(Resolve, SecretsSupplyCredentialsAndAreNamedAsTheirOrigin) {
  DockerConfig regcred;
  regcred.auths = {{"https://b.example.com/v1/", DockerAuth{"robot-b", "secret-pw-b", ""}}};
  Resolved r =
      Resolve(Inputs("registries:\n- address: https://b.example.com\n  authSecret: regcred\n",
                     {{"regcred", regcred}}));
  ASSERT_TRUE(r.ok()) << Messages(r);
  EXPECT_EQ(r.config->registries[1].auth.username, "robot-b");
  EXPECT_EQ(r.origins["registries[0].auth"], "ConfigMap, Secret kube-system/regcred");
  EXPECT_EQ(r.config->registries[1].prefixes, std::vector<std::string>{"docker.io/team/"})
      << "not given by the map: the file's";
  EXPECT_EQ(r.origins["registries[0].prefixes"], "file");

  // Not read yet, or unreadable: the payload is rejected, naming the Secret, never a password.
  Resolved unread =
      Resolve(Inputs("registries:\n- address: https://b.example.com\n  authSecret: regcred\n"));
  ASSERT_FALSE(unread.ok());
  EXPECT_NE(Messages(unread).find("Secret kube-system/regcred has not been read"),
            std::string::npos)
      << Messages(unread);
  DockerConfig forbidden;
  forbidden.error = "Secret kube-system/regcred cannot be read (unauthorized)";
  Resolved denied =
      Resolve(Inputs("registries:\n- address: https://b.example.com\n  authSecret: regcred\n",
                     {{"regcred", forbidden}}));
  ASSERT_FALSE(denied.ok());
  EXPECT_NE(Messages(denied).find("unauthorized"), std::string::npos);
  EXPECT_EQ(Messages(denied).find("file-pw"), std::string::npos);
}

TEST(Resolve, AnUnreadableFileIsAnErrorAndTheSameInputsGiveTheSameAnswer) {
  ConfigInputs inputs = Inputs("debug: true\n");
  inputs.file_error = "/etc/image-cri-shim.yaml: cannot read the configuration file: EACCES";
  Resolved r = Resolve(inputs);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.errors[0], inputs.file_error);

  ConfigInputs good = Inputs("debug: true\n");
  ConfigInputs same = good;
  EXPECT_EQ(good, same);
  EXPECT_EQ(*Resolve(good).config, *Resolve(same).config);
}

TEST(ToMaskedYaml, NamesTheOriginOfEachValueAndNoPassword) {
  Resolved r = Resolve(Inputs("sealos:\n  address: https://b.example.com\ndebug: true\n"));
  ASSERT_TRUE(r.ok()) << Messages(r);
  std::string printed = ToMaskedYaml(*r.config, &r.origins);
  EXPECT_NE(printed.find("address: https://b.example.com  # ConfigMap"), std::string::npos)
      << printed;
  EXPECT_NE(printed.find("auth: user-b:****  # file"), std::string::npos) << printed;
  EXPECT_NE(printed.find("debug: true  # ConfigMap"), std::string::npos) << printed;
  EXPECT_NE(printed.find("reloadInterval: 30s  # default"), std::string::npos) << printed;
  EXPECT_EQ(printed.find("file-pw"), std::string::npos) << printed;

  Resolved pins = Resolve(InputsWithPins("imageNames: requested\n"));
  ASSERT_TRUE(pins.ok()) << Messages(pins);
  printed = ToMaskedYaml(*pins.config, &pins.origins);
  EXPECT_NE(printed.find("\nimageNames: requested  # ConfigMap\n"
                         "pin: [registry.k8s.io/pause/, docker.io/platform/]  # file\n"),
            std::string::npos)
      << printed;
  Resolved policy = Resolve(InputsWithPolicy("deny: []\n"));
  ASSERT_TRUE(policy.ok()) << Messages(policy);
  printed = ToMaskedYaml(*policy.config, &policy.origins);
  EXPECT_NE(printed.find("\npin: []  # default\n"
                         "allow: [docker.io/team/, registry.k8s.io/]  # file\n"
                         "deny: []  # ConfigMap\n"
                         "prePull: [registry.k8s.io/pause:3.9, docker.io/library/busybox:latest]"
                         "  # file\n"),
            std::string::npos)
      << printed;
  EXPECT_NE(printed.find("    prefixes: [docker.io/team/]  # file\n"
                         "    namespaces: [team-b, ci-*]  # file\n"),
            std::string::npos)
      << printed;
}

// --- the state directory ---

class StateDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/state_dir_test.XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    root_ = pattern;
    dir_ = root_ + "/state";
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  std::string root_;
  std::string dir_;
};

TEST_F(StateDirTest, ARoundTripGivesTheSameInputInA0700DirectoryAnd0600File) {
  DockerConfig secret;
  secret.auths = {{"b.example.com", DockerAuth{"u", "p:with:colons\n\"quoted\"", ""}},
                  {"x", DockerAuth{"", "", "has only a token"}}};
  ConfigMapInput input{.namespace_ = "kube-system",
                       .name = "image-cri-shim",
                       .key = "registries.yaml",
                       .payload = "sealos:\n  address: b.example.com\n# no final newline",
                       .secrets = {{"regcred", secret}, {"gone", DockerConfig{"absent", {}}}}};
  ASSERT_TRUE(SaveConfigMapState(dir_, input).ok());
  StatusOr<std::optional<ConfigMapInput>> loaded = LoadConfigMapState(dir_);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ(**loaded, input);
  struct stat st {};
  ASSERT_EQ(stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  ASSERT_EQ(stat((dir_ + "/configmap.yaml").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);

  ASSERT_TRUE(ClearConfigMapState(dir_).ok());
  loaded = LoadConfigMapState(dir_);
  ASSERT_TRUE(loaded.ok());
  EXPECT_FALSE(loaded->has_value());
  EXPECT_TRUE(ClearConfigMapState(dir_).ok()) << "clearing twice is fine";
}

TEST_F(StateDirTest, WhatWasSavedForAnotherConfigMapDoesNotApply) {
  KubeSync settings;  // kube-system/image-cri-shim key registries.yaml
  ConfigMapInput input = ConfigMapInput::For(settings);
  input.payload = "debug: true\n";
  ASSERT_TRUE(SaveConfigMapState(dir_, input).ok());
  StatusOr<std::optional<ConfigMapInput>> same = LoadConfigMapStateFor(dir_, settings);
  ASSERT_TRUE(same.ok());
  ASSERT_TRUE(same->has_value());
  EXPECT_EQ(**same, input);
  settings.key = "other.yaml";
  StatusOr<std::optional<ConfigMapInput>> other = LoadConfigMapStateFor(dir_, settings);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->has_value());
}

TEST_F(StateDirTest, ALinkOrADamagedFileIsRefusedWithoutShowingItsContent) {
  ASSERT_EQ(::mkdir(dir_.c_str(), 0700), 0);
  std::ofstream(root_ + "/elsewhere") << "version: 1\nname: x\npayload: \"secret-pw\"\n";
  ASSERT_EQ(::symlink((root_ + "/elsewhere").c_str(), (dir_ + "/configmap.yaml").c_str()), 0);
  StatusOr<std::optional<ConfigMapInput>> linked = LoadConfigMapState(dir_);
  ASSERT_FALSE(linked.ok());
  EXPECT_NE(linked.status().message().find(dir_ + "/configmap.yaml"), std::string::npos);
  // Saving does not write through the link either.
  EXPECT_FALSE(
      SaveConfigMapState(dir_, ConfigMapInput{.namespace_ = "a", .name = "b", .key = "c"}).ok());
  std::stringstream kept;
  kept << std::ifstream(root_ + "/elsewhere").rdbuf();
  EXPECT_NE(kept.str().find("secret-pw"), std::string::npos);

  ASSERT_EQ(::unlink((dir_ + "/configmap.yaml").c_str()), 0);
  std::ofstream(dir_ + "/configmap.yaml") << "version: 1\npayload: [secret-pw\n";
  StatusOr<std::optional<ConfigMapInput>> damaged = LoadConfigMapState(dir_);
  ASSERT_FALSE(damaged.ok());
  EXPECT_NE(damaged.status().message().find("damaged"), std::string::npos);
  EXPECT_EQ(damaged.status().message().find("secret-pw"), std::string::npos);
}

TEST_F(StateDirTest, AStateDirectoryThatIsALinkIsRefused) {
  ASSERT_EQ(::mkdir((root_ + "/real").c_str(), 0700), 0);
  ASSERT_EQ(::symlink((root_ + "/real").c_str(), dir_.c_str()), 0);
  Status saved =
      SaveConfigMapState(dir_, ConfigMapInput{.namespace_ = "a", .name = "b", .key = "c"});
  ASSERT_FALSE(saved.ok());
  EXPECT_NE(saved.message().find(dir_), std::string::npos) << saved.message();
  EXPECT_FALSE(std::filesystem::exists(root_ + "/real/configmap.yaml"));
}

// The examples the project ships (deploy/config.yaml as the node's file, deploy/configmap.yaml
// with the Secret of deploy/secret-example.yaml) resolve without an error or a warning, and every
// key the ConfigMap example sets is taken from it.
TEST(Resolve, TheShippedExamplesResolveCleanly) {
  auto read = [](const std::string& name) {
    std::ifstream in(std::string(SHIM_SOURCE_DIR) + "/deploy/" + name);
    std::stringstream text;
    text << in.rdbuf();
    EXPECT_FALSE(text.str().empty()) << name;
    return text.str();
  };
  ConfigInputs inputs;
  inputs.file_path = "deploy/config.yaml";
  inputs.file_text = read("config.yaml");
  YAML::Node configmap = YAML::Load(read("configmap.yaml"));
  YAML::Node secret = YAML::Load(read("secret-example.yaml"));
  DockerConfig registry_secret;
  registry_secret.auths.push_back({"registry.company.com", DockerAuth{"admin", "change-me", ""}});
  ASSERT_EQ(secret["metadata"]["name"].as<std::string>(), "image-cri-shim-registry");
  ASSERT_NE(secret["stringData"][".dockerconfigjson"].as<std::string>().find("change-me"),
            std::string::npos);
  inputs.configmap =
      ConfigMapInput{.namespace_ = "kube-system",
                     .name = "image-cri-shim",
                     .key = "registries.yaml",
                     .payload = configmap["data"]["registries.yaml"].as<std::string>(),
                     .secrets = {{"image-cri-shim-registry", registry_secret}}};
  Resolved r = Resolve(inputs);
  ASSERT_TRUE(r.ok()) << Messages(r);
  EXPECT_TRUE(r.warnings.empty()) << Messages(r);
  EXPECT_EQ(r.config->image_names, ImageNames::kRequested);
  EXPECT_EQ(r.config->pin, std::vector<std::string>{"registry.k8s.io/pause/"});
  for (const char* key : {"address", "auth", "timeout", "imageNames", "pin"}) {
    EXPECT_EQ(r.origins[key].substr(0, 9), "ConfigMap") << key;
  }
}

}  // namespace
}  // namespace shim::config
