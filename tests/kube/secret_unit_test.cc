// Credentials from dockerconfigjson Secrets, the pure parts: parsing `.dockerconfigjson`
// (malformed input included), matching its keys to registry hosts, the Secret's type and
// encoding, and `authSecret` in the ConfigMap payload merge. No message may show a secret.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "config/configmap.h"
#include "kube/docker_config.h"

namespace shim {
namespace {

const char* kPw = "s3cr3t:with:colons-Zq9";  // a password with ':' (split at the first only)

std::string B64(const std::string& data) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < data.size(); i += 3) {
    unsigned n = (static_cast<unsigned char>(data[i]) << 16) |
                 (static_cast<unsigned char>(data[i + 1]) << 8) |
                 static_cast<unsigned char>(data[i + 2]);
    for (int shift : {18, 12, 6, 0}) out += k[(n >> shift) & 63];
  }
  if (i < data.size()) {
    unsigned n = static_cast<unsigned char>(data[i]) << 16;
    if (i + 1 < data.size()) n |= static_cast<unsigned char>(data[i + 1]) << 8;
    out += k[(n >> 18) & 63];
    out += k[(n >> 12) & 63];
    out += i + 1 < data.size() ? k[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

void ExpectNoSecret(const std::string& text) {
  for (const std::string& secret : {std::string(kPw), std::string("s3cr3t"), B64("bob:pw-b1")}) {
    EXPECT_EQ(text.find(secret), std::string::npos) << text;
  }
}

TEST(DockerConfigJson, UsernameAndPasswordOrAuthAlone) {
  std::string json = R"({"auths": {
      "reg.example.com": {"username": "alice", "password": "s3cr3t:with:colons-Zq9",
                          "auth": ")" +
                     B64(std::string("alice:") + kPw) + R"("},
      "other.example.com:5000": {"auth": ")" +
                     B64(std::string("bob:") + kPw) + R"("}}})";
  kube::DockerConfig c = kube::ParseDockerConfigJson(json);
  ASSERT_TRUE(c.ok()) << c.error;
  ASSERT_EQ(c.auths.size(), 2u);
  const kube::DockerAuth* a = c.Find("reg.example.com");
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(a->ok());
  EXPECT_EQ(a->username, "alice");
  EXPECT_EQ(a->password, kPw);
  const kube::DockerAuth* b = c.Find("other.example.com:5000");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->username, "bob");
  EXPECT_EQ(b->password, kPw) << "split at the first ':' only";
  EXPECT_EQ(c.Find("other.example.com"), nullptr) << "the port is part of the host";
  EXPECT_EQ(c.Find("unknown.example.com"), nullptr);
}

TEST(DockerConfigJson, MalformedDocumentsAreErrorsWithoutSecrets) {
  for (const std::string& json :
       {std::string(""), std::string("not json s3cr3t"), std::string("[1,2]"),
        std::string(R"({"s3cr3t": 1})"), std::string(R"({"auths": "s3cr3t"})"),
        std::string(R"({"auths": [)")}) {
    kube::DockerConfig c = kube::ParseDockerConfigJson(json);
    EXPECT_FALSE(c.ok()) << json;
    ExpectNoSecret(c.error);
  }
}

TEST(DockerConfigJson, UnusableEntriesSayWhyAndLeaveTheOthers) {
  std::map<std::string, std::string> entries = {
      {"a.example.com", R"("s3cr3t")"},
      {"b.example.com", R"({"auth": "%%%s3cr3t"})"},
      {"c.example.com", R"({"auth": ")" + B64("s3cr3t-no-colon") + R"("})"},
      {"d.example.com", R"({"identitytoken": "s3cr3t"})"},
      {"e.example.com", R"({})"},
      {"f.example.com", R"({"username": "u", "password": 5})"},
      {"g.example.com", R"({"auth": ")" + B64(":s3cr3t") + R"("})"},
      {"h.example.com", R"({"username": "u:x", "password": "s3cr3t"})"},
      {"i.example.com", R"({"username": "u", "password": "s3cr3t\n"})"},
  };
  std::string json = R"({"auths": {"ok.example.com": {"auth": ")" + B64("bob:pw-b1") + R"("})";
  for (const auto& [host, entry] : entries) json += ",\"" + host + "\":" + entry;
  json += "}}";
  kube::DockerConfig c = kube::ParseDockerConfigJson(json);
  ASSERT_TRUE(c.ok()) << c.error;
  ASSERT_NE(c.Find("ok.example.com"), nullptr);
  EXPECT_TRUE(c.Find("ok.example.com")->ok());
  for (const auto& [host, entry] : entries) {
    const kube::DockerAuth* a = c.Find(host);
    ASSERT_NE(a, nullptr) << host;
    EXPECT_FALSE(a->ok()) << host;
    EXPECT_TRUE(a->username.empty() && a->password.empty()) << host;
    ExpectNoSecret(a->error);
  }
}

TEST(DockerConfigJson, KeysMatchHostsAfterNormalisation) {
  std::string json = R"({"auths": {
      "https://Reg.Example.com/v1/": {"auth": ")" +
                     B64("scheme:pw") + R"("},
      "reg.example.com": {"auth": ")" +
                     B64("exact:pw") + R"("},
      "https://tls.example.com:443": {"auth": ")" +
                     B64("port:pw") + R"("},
      "http://plain.example.com:80/": {"auth": ")" +
                     B64("plain:pw") + R"("},
      "index.docker.io": {"auth": ")" +
                     B64("hub:pw") + R"("},
      "https://only-scheme.example.com:8443/path": {"auth": ")" +
                     B64("only:pw") + R"("}}})";
  kube::DockerConfig c = kube::ParseDockerConfigJson(json);
  ASSERT_TRUE(c.ok());
  auto user = [&](const std::string& host) {
    const kube::DockerAuth* a = c.Find(host);
    return a == nullptr ? std::string("<none>") : a->username;
  };
  EXPECT_EQ(user("reg.example.com"), "exact") << "the exact key wins over a normalised one";
  EXPECT_EQ(user("tls.example.com"), "port");
  EXPECT_EQ(user("plain.example.com"), "plain");
  EXPECT_EQ(user("docker.io"), "hub");
  EXPECT_EQ(user("only-scheme.example.com:8443"), "only");
  EXPECT_EQ(user("only-scheme.example.com"), "<none>");
  EXPECT_EQ(user(""), "<none>");

  EXPECT_EQ(config::RegistryHostKey("https://Reg.example.com:443/proxy"), "reg.example.com");
  EXPECT_EQ(config::RegistryHostKey("http://reg.example.com:80"), "reg.example.com");
  EXPECT_EQ(config::RegistryHostKey("http://reg.example.com:443"), "reg.example.com:443");
  EXPECT_EQ(config::RegistryHostKey("reg.example.com:5000"), "reg.example.com:5000");
  EXPECT_EQ(config::RegistryHostKey("https://"), "");
}

TEST(DockerConfigJson, FromSecretChecksTypeKeyAndEncoding) {
  std::string json = R"({"auths": {"reg.example.com": {"auth": ")" + B64("bob:pw-b1") + R"("}}})";
  kube::ObjectState secret{.exists = true,
                           .type = "kubernetes.io/dockerconfigjson",
                           .data = {{".dockerconfigjson", B64(json)}}};
  kube::DockerConfig ok = kube::DockerConfigFromSecret(secret, "kube-system/regcred");
  ASSERT_TRUE(ok.ok()) << ok.error;
  EXPECT_EQ(ok.Find("reg.example.com")->password, "pw-b1");

  kube::ObjectState opaque = secret;
  opaque.type = "Opaque";
  kube::DockerConfig wrong = kube::DockerConfigFromSecret(opaque, "kube-system/regcred");
  EXPECT_NE(wrong.error.find("of type \"Opaque\""), std::string::npos) << wrong.error;

  kube::ObjectState no_key = secret;
  no_key.data = {{"password", B64("s3cr3t")}};
  EXPECT_NE(kube::DockerConfigFromSecret(no_key, "ns/x").error.find("no key .dockerconfigjson"),
            std::string::npos);
  kube::ObjectState bad = secret;
  bad.data = {{".dockerconfigjson", "%%%"}};
  EXPECT_NE(kube::DockerConfigFromSecret(bad, "ns/x").error.find("not base64"), std::string::npos);
  kube::ObjectState absent;
  EXPECT_NE(kube::DockerConfigFromSecret(absent, "ns/x").error.find("does not exist"),
            std::string::npos);
  for (const auto& s : {wrong.error}) ExpectNoSecret(s);
}

// The merge with a lookup that plays the Secrets.
const char* kLocal =
    "shim: /run/shim/shim.sock\n"
    "cri: /run/containerd/containerd.sock\n"
    "address: https://old.example.com\n"
    "auth: \"old-user:old-pass\"\n"
    "reloadInterval: 30s\n";
const std::string kSource = "ConfigMap kube-system/image-cri-shim key registries.yaml";

config::SecretLookup Secrets(std::map<std::pair<std::string, std::string>, config::SecretAuth> m,
                             std::vector<std::pair<std::string, std::string>>* asked = nullptr) {
  return [m, asked](const std::string& secret, const std::string& host) {
    if (asked != nullptr) asked->emplace_back(secret, host);
    auto it = m.find({secret, host});
    if (it != m.end()) return it->second;
    config::SecretAuth out;
    out.problem = "Secret kube-system/" + secret + " has no entry for " + host;
    return out;
  };
}

std::string Messages(const config::MergeResult& r) {
  std::string out;
  for (const auto& e : r.errors) out += "error: " + e + "\n";
  for (const auto& w : r.warnings) out += "warning: " + w + "\n";
  return out;
}

TEST(SecretMerge, AuthSecretSuppliesPrimaryAndRegistryCredentials) {
  std::vector<std::pair<std::string, std::string>> asked;
  auto lookup = Secrets({{{"regcred", "registry.company.com"}, {"admin", kPw, ""}},
                         {{"mirrorcred", "mirror.company.com:5000"}, {"mirror", "m-pw", ""}}},
                        &asked);
  const char* payload =
      "version: v1\n"
      "sealos: {address: \"https://registry.company.com\", authSecret: regcred}\n"
      "registries:\n"
      "- address: https://mirror.company.com:5000/cache\n"
      "  authSecret: mirrorcred\n"
      "- address: https://anon.company.com\n";
  config::MergeResult r =
      config::MergeConfigMap(kLocal, "/etc/shim.yaml", payload, kSource, lookup);
  ASSERT_TRUE(r.ok()) << Messages(r);
  const config::Config& c = *r.loaded.config;
  ASSERT_EQ(c.registries.size(), 3u);
  EXPECT_EQ(c.registries[0].auth.username, "admin");
  EXPECT_EQ(c.registries[0].auth.password, kPw);
  EXPECT_EQ(c.registries[1].auth.username, "mirror");
  EXPECT_TRUE(c.registries[2].auth.empty());
  // --dry-run names the Secret a credential came from.
  EXPECT_EQ(r.origins["auth"], "ConfigMap, Secret kube-system/regcred");
  EXPECT_EQ(r.origins["registries[0].auth"], "ConfigMap, Secret kube-system/mirrorcred");
  EXPECT_EQ(r.origins.count("registries[1].auth"), 0u);
  EXPECT_EQ(asked.size(), 2u);
  ExpectNoSecret(Messages(r));
  EXPECT_EQ(config::ReferencedSecrets(payload),
            (std::vector<std::string>{"mirrorcred", "regcred"}));
}

TEST(SecretMerge, ASecretThatCannotSupplyThemRejectsThePayloadWhole) {
  auto forbidden = [](const std::string& secret, const std::string&) {
    config::SecretAuth out;
    out.problem = "Secret kube-system/" + secret + " cannot be read (unauthorized: HTTP 403)";
    return out;
  };
  const char* payload = "sealos: {address: https://registry.company.com, authSecret: regcred}\n";
  config::MergeResult r =
      config::MergeConfigMap(kLocal, "/etc/shim.yaml", payload, kSource, forbidden);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.errors[0].find("sealos.authSecret"), std::string::npos) << r.errors[0];
  EXPECT_NE(r.errors[0].find("403"), std::string::npos) << r.errors[0];
  EXPECT_EQ(r.loaded.config, nullptr);

  // No entry for the registry's host: rejected too, naming the host.
  const char* registry =
      "registries:\n- address: https://mirror.company.com\n  authSecret: regcred\n";
  r = config::MergeConfigMap(kLocal, "/etc/shim.yaml", registry, kSource, Secrets({}));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.errors[0].find("registries[0].authSecret"), std::string::npos) << r.errors[0];
  EXPECT_NE(r.errors[0].find("mirror.company.com"), std::string::npos) << r.errors[0];
}

TEST(SecretMerge, InlineAuthIsTheFallbackAndTheSecretWins) {
  const char* payload =
      "sealos:\n  address: https://registry.company.com\n"
      "  auth: {username: inline, password: inline-pw}\n  authSecret: regcred\n";
  config::MergeResult r =
      config::MergeConfigMap(kLocal, "/etc/shim.yaml", payload, kSource, Secrets({}));
  ASSERT_TRUE(r.ok()) << Messages(r);
  EXPECT_EQ(r.loaded.config->registries[0].auth.username, "inline");
  ASSERT_EQ(r.warnings.size(), 1u) << Messages(r);
  EXPECT_NE(r.warnings[0].find("auth is used until"), std::string::npos);

  r = config::MergeConfigMap(
      kLocal, "/etc/shim.yaml", payload, kSource,
      Secrets({{{"regcred", "registry.company.com"}, {"from-secret", "secret-pw", ""}}}));
  ASSERT_TRUE(r.ok()) << Messages(r);
  EXPECT_EQ(r.loaded.config->registries[0].auth.username, "from-secret");
}

TEST(SecretMerge, InvalidReferencesAndNoLookup) {
  for (const char* payload : {"sealos: {address: https://r.example.com, authSecret: Not_A_Name}\n",
                              "sealos: {address: https://r.example.com, authSecret: [a]}\n",
                              "sealos: {authSecret: regcred}\n",
                              "registries:\n- {address: \"ftp:\", authSecret: regcred}\n"}) {
    config::MergeResult r =
        config::MergeConfigMap(kLocal, "/etc/shim.yaml", payload, kSource, Secrets({}));
    EXPECT_FALSE(r.ok()) << payload;
  }
  // --dry-run merges without reading Secrets: a warning, and no credentials invented.
  config::MergeResult r = config::MergeConfigMap(
      kLocal, "/etc/shim.yaml",
      "sealos: {address: https://registry.company.com, authSecret: regcred}\n", kSource);
  ASSERT_TRUE(r.ok()) << Messages(r);
  EXPECT_TRUE(r.loaded.config->registries[0].auth.empty());
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("is not read here"), std::string::npos);
  EXPECT_TRUE(config::ReferencedSecrets("[not a map").empty());
  EXPECT_TRUE(config::ReferencedSecrets("sealos: {authSecret: Bad_Name}").empty());
}

}  // namespace
}  // namespace shim
