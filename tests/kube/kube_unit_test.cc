// The pure parts of dynamic configuration: the ConfigMap payload and its merge rules, kubeconfig
// parsing, credentials discovery order and unreadable credential files, the atomic writer and
// the private directory.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "config/configmap.h"
#include "config/writer.h"
#include "kube/api_client.h"
#include "kube/credentials.h"

namespace shim {
namespace {

namespace fs = std::filesystem;

const char* kLocal =
    "shim: /run/shim/shim.sock\n"
    "cri: /run/containerd/containerd.sock\n"
    "address: https://old.example.com\n"
    "auth: \"old-user:old-pass\"\n"
    "registries:\n"
    "- address: https://local-mirror.example.com\n"
    "  auth: \"mirror:mirror-pass\"\n"
    "reloadInterval: 30s\n";

const char* kDocumented =
    "version: \"v1\"\n"
    "sealos:\n"
    "  address: \"https://registry.company.com\"\n"
    "  auth: {username: \"admin\", password: \"new-password123\"}\n"
    "registries:\n"
    "- address: \"https://backup-registry.company.com\"\n"
    "  auth: {username: \"backup-user\", password: \"backup-pass\"}\n"
    "reloadInterval: \"60s\"\n"
    "force: true\n"
    "debug: false\n"
    "timeout: \"20m\"\n";

const std::string kSource = "ConfigMap kube-system/image-cri-shim key registries.yaml";

config::MergeResult Merge(const std::string& local, const std::string& payload) {
  return config::MergeConfigMap(local, "/etc/image-cri-shim/config.yaml", payload, kSource);
}

std::string Messages(const config::MergeResult& r) {
  std::string out;
  for (const auto& e : r.errors) out += "error: " + e + "\n";
  for (const auto& w : r.warnings) out += "warning: " + w + "\n";
  return out;
}

TEST(ConfigMapMerge, DocumentedPayloadReplacesWhatItNames) {
  config::MergeResult r = Merge(kLocal, kDocumented);
  ASSERT_TRUE(r.ok()) << Messages(r);
  const config::Config& c = *r.loaded.config;
  EXPECT_EQ(c.shim_socket, "/run/shim/shim.sock");
  EXPECT_EQ(c.cri_socket, "/run/containerd/containerd.sock");
  ASSERT_EQ(c.registries.size(), 2u);
  EXPECT_EQ(c.registries[0].address, "https://registry.company.com");
  EXPECT_EQ(c.registries[0].auth.username, "admin");
  EXPECT_EQ(c.registries[0].auth.password, "new-password123");
  EXPECT_EQ(c.registries[1].address, "https://backup-registry.company.com");
  EXPECT_EQ(c.registries[1].auth.username, "backup-user");
  EXPECT_EQ(c.reload_interval, std::chrono::seconds(60));
  EXPECT_EQ(c.timeout, std::chrono::minutes(20));
  EXPECT_TRUE(c.force);
  // Where each value came from, as --dry-run prints it.
  EXPECT_EQ(r.origins["address"], "ConfigMap");
  EXPECT_EQ(r.origins["auth"], "ConfigMap");
  EXPECT_EQ(r.origins["registries[0].auth"], "ConfigMap");
  EXPECT_EQ(r.origins["shim"], "file");
  EXPECT_EQ(r.origins["timeout"], "ConfigMap");
  EXPECT_EQ(r.origins.count("metricsAddress"), 0u) << "a default has no entry";
}

TEST(ConfigMapMerge, PayloadWithoutRegistriesKeepsTheLocalList) {
  config::MergeResult r =
      Merge(kLocal,
            "sealos:\n  address: https://registry.company.com\n  auth: {username: a, "
            "password: b}\n");
  ASSERT_TRUE(r.ok()) << Messages(r);
  const config::Config& c = *r.loaded.config;
  ASSERT_EQ(c.registries.size(), 2u);
  EXPECT_EQ(c.registries[0].address, "https://registry.company.com");
  EXPECT_EQ(c.registries[1].address, "https://local-mirror.example.com");
  EXPECT_EQ(c.registries[1].auth.password, "mirror-pass");
  EXPECT_EQ(c.reload_interval, std::chrono::seconds(30));  // absent: local value
}

TEST(ConfigMapMerge, AnExplicitlyEmptyListEmptiesIt) {
  config::MergeResult r = Merge(kLocal, "registries: []\n");
  ASSERT_TRUE(r.ok()) << Messages(r);
  EXPECT_EQ(r.loaded.config->registries.size(), 1u);
}

TEST(ConfigMapMerge, NodeKeysNeverComeFromThePayload) {
  config::MergeResult r = Merge(kLocal,
                                "shim: /tmp/evil.sock\ncri: /tmp/evil2.sock\nmetricsAddress: "
                                "0.0.0.0:1\nconfigMap: {enabled: false}\ndebug: true\n");
  ASSERT_TRUE(r.ok()) << Messages(r);
  const config::Config& c = *r.loaded.config;
  EXPECT_EQ(c.shim_socket, "/run/shim/shim.sock");
  EXPECT_EQ(c.cri_socket, "/run/containerd/containerd.sock");
  EXPECT_EQ(c.metrics.address, "127.0.0.1:10258");
  EXPECT_TRUE(c.kube.enabled);
  EXPECT_TRUE(c.debug);
  EXPECT_EQ(r.warnings.size(), 4u) << Messages(r);
}

TEST(ConfigMapMerge, LocalFileFormsAreAccepted) {
  config::MergeResult r = Merge(kLocal,
                                "address: https://registry.company.com\nauth: \"u:p:with:colons\"\n"
                                "registries:\n- address: https://b.example.com\n  auth: \"x:y\"\n");
  ASSERT_TRUE(r.ok()) << Messages(r);
  const config::Config& c = *r.loaded.config;
  EXPECT_EQ(c.registries[0].auth.password, "p:with:colons");
  EXPECT_EQ(c.registries[1].auth.username, "x");
}

TEST(ConfigMapMerge, CredentialsStayWithTheirRegistry) {
  // A new primary without auth is anonymous: the old registry's password must not follow it.
  config::MergeResult moved = Merge(kLocal, "sealos: {address: https://new.example.com}\n");
  ASSERT_TRUE(moved.ok()) << Messages(moved);
  EXPECT_TRUE(moved.loaded.config->registries[0].auth.empty());
  // The same primary without auth keeps its local credentials.
  config::MergeResult same = Merge(kLocal, "sealos: {address: https://old.example.com}\n");
  ASSERT_TRUE(same.ok()) << Messages(same);
  EXPECT_EQ(same.loaded.config->registries[0].auth.password, "old-pass");
}

TEST(ConfigMapMerge, InvalidPayloadIsRejectedWholeWithTheReasonAndNoPassword) {
  struct Case {
    std::string payload;
    std::string expected;
  };
  std::vector<Case> cases = {
      {"registries:\n- address: ftp://x\n  auth: {username: u, password: s3cret-value}\n",
       "registries[0].address"},
      {"sealos: {address: https://a.example.com, auth: {username: u}}\n", "sealos.auth"},
      {"sealos: {address: https://a.example.com, auth: {username: 'u:x', password: "
       "s3cret-value}}\n",
       "sealos.auth.username"},
      {"version: v2\n", "version"},
      {"timeout: soon\n", "timeout"},
      {"registries: {address: x}\n", "registries"},
      {"sealos: [1, 2\n", "YAML syntax error"},
      {"", "empty"},
      {"sealos: {address: https://a.example.com}\naddress: https://b.example.com\n", "address"},
  };
  for (const Case& c : cases) {
    config::MergeResult r = Merge(kLocal, c.payload);
    EXPECT_FALSE(r.ok()) << c.payload;
    EXPECT_EQ(r.loaded.config, nullptr);
    std::string all = Messages(r);
    EXPECT_NE(all.find(c.expected), std::string::npos) << c.payload << "\n" << all;
    EXPECT_NE(all.find("ConfigMap kube-system/image-cri-shim"), std::string::npos) << all;
    EXPECT_EQ(all.find("s3cret-value"), std::string::npos) << all;
    EXPECT_EQ(all.find("old-pass"), std::string::npos) << all;
  }
}

TEST(ConfigMapMerge, ALocalFileWithoutAddressCanBeCompletedByThePayload) {
  config::MergeResult r = Merge("cri: /run/containerd/containerd.sock\n", kDocumented);
  ASSERT_TRUE(r.ok()) << Messages(r);
  EXPECT_EQ(r.loaded.config->registries[0].address, "https://registry.company.com");
}

// ---- kubeconfig and discovery ----

class TempTree : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/kube-unit-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path) << text;
    return path;
  }
  std::string dir_;
};

using Kubeconfig = TempTree;

const char* kKubeconfig =
    "apiVersion: v1\n"
    "kind: Config\n"
    "clusters:\n"
    "- name: other\n"
    "  cluster: {server: https://other:6443}\n"
    "- name: prod\n"
    "  cluster:\n"
    "    server: https://10.0.0.1:6443/\n"
    "    certificate-authority: pki/ca.crt\n"
    "users:\n"
    "- name: admin\n"
    "  user:\n"
    "    token: very-secret-token\n"
    "- name: node\n"
    "  user:\n"
    "    client-certificate-data: Q0VSVA==\n"
    "    client-key-data: S0VZ\n"
    "contexts:\n"
    "- name: a\n"
    "  context: {cluster: other, user: node}\n"
    "- name: b\n"
    "  context: {cluster: prod, user: admin}\n"
    "current-context: b\n";

TEST_F(Kubeconfig, CurrentContextPicksClusterAndUser) {
  auto c = kube::ParseKubeconfig(kKubeconfig, "/etc/kubernetes/admin.conf");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->server, "https://10.0.0.1:6443");
  EXPECT_EQ(c->ca_file, "/etc/kubernetes/pki/ca.crt");  // relative to the file
  EXPECT_EQ(c->token, "very-secret-token");
  EXPECT_EQ(c->context, "b");
  EXPECT_FALSE(c->insecure_skip_tls_verify);
  std::string described = c->Describe();
  EXPECT_EQ(described.find("very-secret-token"), std::string::npos) << described;
  EXPECT_NE(described.find("bearer token"), std::string::npos) << described;
  EXPECT_NE(described.find("https://10.0.0.1:6443"), std::string::npos) << described;
}

TEST_F(Kubeconfig, ClientCertificateDataAndInsecureSkip) {
  std::string text = kKubeconfig;
  text.replace(text.find("current-context: b"), 18, "current-context: a");
  text.replace(text.find("{server: https://other:6443}"), 28,
               "{server: https://other:6443, insecure-skip-tls-verify: true}");
  auto c = kube::ParseKubeconfig(text, "/x/kubeconfig");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->client_cert_data, "CERT");
  EXPECT_EQ(c->client_key_data, "KEY");
  EXPECT_TRUE(c->insecure_skip_tls_verify);
  EXPECT_TRUE(c->token.empty());
  EXPECT_NE(c->Describe().find("client certificate"), std::string::npos);
}

TEST_F(Kubeconfig, TokenFileAndCaDataAndUnusableFiles) {
  auto c = kube::ParseKubeconfig(
      "clusters: [{name: c, cluster: {server: 'https://k:6443', certificate-authority-data: "
      "UEVN}}]\nusers: [{name: u, user: {tokenFile: tok}}]\ncontexts: [{name: x, context: "
      "{cluster: c, user: u}}]\n",
      "/root/.kube/config");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->ca_data, "PEM");
  EXPECT_EQ(c->token_file, "/root/.kube/tok");

  EXPECT_FALSE(kube::ParseKubeconfig("[1", "/p").ok());
  auto exec = kube::ParseKubeconfig(
      "clusters: [{name: c, cluster: {server: 'https://k'}}]\nusers: [{name: u, user: {exec: "
      "{command: aws}}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
      "current-context: x\n",
      "/p");
  ASSERT_FALSE(exec.ok());
  EXPECT_NE(exec.status().message().find("plugin"), std::string::npos);
  auto no_context = kube::ParseKubeconfig(
      "clusters: []\ncontexts: [{name: a, context: {}}, {name: b, context: {}}]\n", "/p");
  ASSERT_FALSE(no_context.ok());
  EXPECT_NE(no_context.status().message().find("current-context"), std::string::npos);
  auto half_cert = kube::ParseKubeconfig(
      "clusters: [{name: c, cluster: {server: 'https://k'}}]\nusers: [{name: u, user: "
      "{client-certificate: c.crt}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n",
      "/p");
  EXPECT_FALSE(half_cert.ok());
}

using Discovery = TempTree;

TEST_F(Discovery, OrderIsPodThenKubeconfigEnvThenNodeFilesThenHome) {
  std::map<std::string, std::string> vars;
  kube::DiscoveryEnv env;
  env.getenv = [&](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
  env.service_account_dir = dir_ + "/sa";
  env.node_kubeconfigs = {dir_ + "/admin.conf", dir_ + "/kubelet.conf"};
  auto config_for = [](const std::string& server) {
    return "clusters: [{name: c, cluster: {server: '" + server +
           "'}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: "
           "c, user: u}}]\ncurrent-context: x\n";
  };
  auto found = [&]() -> std::string {
    kube::Discovery d = kube::DiscoverCredentials(env);
    return d.credentials ? d.credentials->server : "none";
  };
  EXPECT_EQ(found(), "none");

  vars["HOME"] = dir_ + "/home";
  Write("home/.kube/config", config_for("https://home:1"));
  EXPECT_EQ(found(), "https://home:1");
  Write("kubelet.conf", config_for("https://kubelet:1"));
  EXPECT_EQ(found(), "https://kubelet:1");
  Write("admin.conf", "not: [valid");  // unusable: reported and skipped
  EXPECT_EQ(found(), "https://kubelet:1");
  Write("admin.conf", config_for("https://admin:1"));
  EXPECT_EQ(found(), "https://admin:1");
  vars["KUBECONFIG"] = dir_ + "/missing:" + Write("env.conf", config_for("https://env:1"));
  EXPECT_EQ(found(), "https://env:1");

  vars["KUBERNETES_SERVICE_HOST"] = "10.96.0.1";
  vars["KUBERNETES_SERVICE_PORT"] = "443";
  EXPECT_EQ(found(), "https://env:1");  // no service account token: not in a pod
  Write("sa/token", "pod-token\n");
  Write("sa/ca.crt", "CA");
  kube::Discovery d = kube::DiscoverCredentials(env);
  ASSERT_TRUE(d.credentials);
  EXPECT_EQ(d.credentials->server, "https://10.96.0.1:443");
  EXPECT_EQ(d.credentials->token_file, dir_ + "/sa/token");
  EXPECT_EQ(d.credentials->ca_file, dir_ + "/sa/ca.crt");
  for (const auto& line : d.tried) EXPECT_EQ(line.find("pod-token"), std::string::npos);
}

TEST_F(Discovery, UnreadableFilesAreReportedWithTheSystemsReason) {
  kube::DiscoveryEnv env;
  env.getenv = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  env.service_account_dir = dir_ + "/sa";
  std::string file = Write("file", "x");
  fs::create_directory(dir_ + "/admin.conf");
  env.node_kubeconfigs = {dir_ + "/admin.conf", file + "/kubelet.conf"};
  kube::Discovery d = kube::DiscoverCredentials(env);
  EXPECT_FALSE(d.credentials);
  std::string tried;
  for (const auto& line : d.tried) tried += line + "\n";
  EXPECT_NE(tried.find("cannot read " + dir_ + "/admin.conf: " + std::strerror(EISDIR)),
            std::string::npos)
      << tried;
  EXPECT_NE(tried.find(file + "/kubelet.conf: cannot check it: " + std::strerror(ENOTDIR)),
            std::string::npos)
      << tried;
}

// Requests that fail before any connection: a credential file cannot be read. Nothing listens
// on port 1, so a request that went out would fail with another reason.
class UnreadableCredentialFile : public TempTree {
 protected:
  kube::Response Get(const kube::Credentials& c) {
    return kube::MakeApiClient(c)->Get("/api/v1/namespaces/kube-system/configmaps/x");
  }
  kube::Credentials Base() {
    kube::Credentials c;
    c.source = "kubeconfig /etc/kubernetes/admin.conf";
    c.server = "https://127.0.0.1:1";
    c.token = "very-secret-token";
    return c;
  }
  void ExpectReported(const kube::Response& r, const std::string& path, int error,
                      const std::string& what) {
    EXPECT_EQ(r.status, 0);
    EXPECT_NE(r.error.find("cannot read " + path + ": " + std::strerror(error)), std::string::npos)
        << r.error;
    EXPECT_NE(r.error.find(what + " of kubeconfig /etc/kubernetes/admin.conf"), std::string::npos)
        << r.error;
    EXPECT_EQ(r.error.find("very-secret-token"), std::string::npos) << r.error;
  }
};

TEST_F(UnreadableCredentialFile, TokenFile) {
  kube::Credentials c = Base();
  c.token.clear();
  c.token_file = dir_ + "/token";
  ExpectReported(Get(c), c.token_file, ENOENT, "bearer token file");
}

TEST_F(UnreadableCredentialFile, CaFile) {
  kube::Credentials c = Base();
  c.ca_file = dir_ + "/ca.crt";
  fs::create_directory(c.ca_file);
  ExpectReported(Get(c), c.ca_file, EISDIR, "CA file");
}

TEST_F(UnreadableCredentialFile, ClientCertificateAndKeyFiles) {
  kube::Credentials c = Base();
  c.token.clear();
  c.client_cert_file = dir_ + "/client.crt";
  c.client_key_file = dir_ + "/client.key";
  ExpectReported(Get(c), c.client_cert_file, ENOENT, "client certificate file");
  Write("client.crt", "CERT");
  ExpectReported(Get(c), c.client_key_file, ENOENT, "client key file");
}

TEST(Base64, DecodesWithAndWithoutPadding) {
  EXPECT_EQ(kube::DecodeBase64("aGVsbG8="), "hello");
  EXPECT_EQ(kube::DecodeBase64("aGVsbG8"), "hello");
  EXPECT_EQ(kube::DecodeBase64("aGVs\nbG8h"), "hello!");
  EXPECT_FALSE(kube::DecodeBase64("a$b"));
}

// ---- atomic writer ----

using AtomicWriter = TempTree;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

size_t EntriesIn(const std::string& dir) {
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

TEST_F(AtomicWriter, ReplacesTheFileWithMode0600AndLeavesNothingElse) {
  std::string path = Write("config.yaml", "old\n");
  ::chmod(path.c_str(), 0644);
  ASSERT_TRUE(config::WriteFileAtomically(path, "new content\n").ok());
  EXPECT_EQ(Slurp(path), "new content\n");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(EntriesIn(dir_), 1u);
}

TEST_F(AtomicWriter, AFailedWriteLeavesTheOldFileWholeAndNoTemporaryFile) {
  std::string path = Write("config.yaml", "old content\n");
  // The file size limit makes write() fail half way (EFBIG), even for root.
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  struct sigaction previous {};
  ASSERT_EQ(sigaction(SIGXFSZ, &ignore, &previous), 0);
  rlimit old_limit{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  rlimit small = old_limit;
  small.rlim_cur = 4096;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  Status status = config::WriteFileAtomically(path, std::string(100000, 'x'));
  setrlimit(RLIMIT_FSIZE, &old_limit);
  sigaction(SIGXFSZ, &previous, nullptr);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find(path), std::string::npos) << status.message();
  EXPECT_EQ(Slurp(path), "old content\n");
  EXPECT_EQ(EntriesIn(dir_), 1u);
}

TEST_F(AtomicWriter, AMissingDirectoryIsAnErrorNamingIt) {
  Status status = config::WriteFileAtomically(dir_ + "/no/such/config.yaml", "x");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find(dir_ + "/no/such"), std::string::npos) << status.message();
}

bool IsSymlink(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
}

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 ? st.st_mode & 07777 : 0;
}

TEST_F(AtomicWriter, ATargetThatIsASymbolicLinkIsRefusedAndItsTargetLeftAlone) {
  std::string precious = Write("precious", "precious content\n");
  std::string path = dir_ + "/config.yaml";
  ASSERT_EQ(::symlink(precious.c_str(), path.c_str()), 0);
  Status status = config::WriteFileAtomically(path, "new content\n");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find(path + " is a symbolic link"), std::string::npos)
      << status.message();
  EXPECT_EQ(Slurp(precious), "precious content\n");
  EXPECT_TRUE(IsSymlink(path));
  EXPECT_EQ(EntriesIn(dir_), 2u);  // no temporary file left
}

TEST_F(AtomicWriter, ADanglingSymbolicLinkIsRefusedAndCreatesNothing) {
  std::string path = dir_ + "/config.yaml";
  ASSERT_EQ(::symlink((dir_ + "/elsewhere").c_str(), path.c_str()), 0);
  EXPECT_FALSE(config::WriteFileAtomically(path, "x").ok());
  EXPECT_FALSE(fs::exists(dir_ + "/elsewhere"));
  EXPECT_EQ(EntriesIn(dir_), 1u);
}

TEST_F(AtomicWriter, ADirectoryAtTheTargetIsRefused) {
  std::string path = dir_ + "/config.yaml";
  fs::create_directory(path);
  Status status = config::WriteFileAtomically(path, "x");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find(path + " exists and is not a regular file"), std::string::npos)
      << status.message();
}

TEST_F(AtomicWriter, LinksPlantedAtTemporaryNamesAreSkippedNotFollowed) {
  // The temporary names are .<name>.tmp-<pid>-<counter>; the counter is process-wide, so the
  // links cover its first values and the writer, allowed 100 tries, must step past them.
  std::string precious = Write("precious", "precious content\n");
  for (int i = 0; i < 99; ++i) {
    std::string name =
        dir_ + "/.config.yaml.tmp-" + std::to_string(::getpid()) + "-" + std::to_string(i);
    ASSERT_EQ(::symlink(precious.c_str(), name.c_str()), 0);
  }
  std::string path = dir_ + "/config.yaml";
  Status status = config::WriteFileAtomically(path, "new content\n");
  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_EQ(Slurp(path), "new content\n");
  EXPECT_FALSE(IsSymlink(path));
  EXPECT_EQ(Slurp(precious), "precious content\n");
  EXPECT_EQ(EntriesIn(dir_), 101u);  // the 99 links, precious, the new file
}

using PrivateDirectory = TempTree;

TEST_F(PrivateDirectory, CreatesTheLastComponentWithMode0700) {
  std::string path = dir_ + "/secrets";
  ASSERT_TRUE(config::EnsurePrivateDirectory(path).ok());
  EXPECT_TRUE(fs::is_directory(path));
  EXPECT_EQ(ModeOf(path), 0700u);
  EXPECT_TRUE(config::EnsurePrivateDirectory(path).ok());  // again: nothing to do
  EXPECT_EQ(ModeOf(path), 0700u);
}

TEST_F(PrivateDirectory, TightensALooserExistingDirectory) {
  std::string path = dir_ + "/secrets";
  ASSERT_EQ(::mkdir(path.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(path.c_str(), 0777), 0);
  ASSERT_TRUE(config::EnsurePrivateDirectory(path).ok());
  EXPECT_EQ(ModeOf(path), 0700u);
}

TEST_F(PrivateDirectory, AMissingParentIsAnErrorNamingItAndNothingIsCreated) {
  std::string path = dir_ + "/no/secrets";
  Status status = config::EnsurePrivateDirectory(path);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find(dir_ + "/no does not exist"), std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find(std::strerror(ENOENT)), std::string::npos) << status.message();
  EXPECT_FALSE(fs::exists(dir_ + "/no"));
}

TEST_F(PrivateDirectory, ASymbolicLinkIsRefusedAndItsTargetLeftAlone) {
  std::string real = dir_ + "/real";
  ASSERT_EQ(::mkdir(real.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(real.c_str(), 0755), 0);
  std::string path = dir_ + "/secrets";
  ASSERT_EQ(::symlink(real.c_str(), path.c_str()), 0);
  Status status = config::EnsurePrivateDirectory(path);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find(path + " is a symbolic link"), std::string::npos)
      << status.message();
  EXPECT_EQ(ModeOf(real), 0755u);
}

TEST_F(PrivateDirectory, ADirectoryOfAnotherOwnerIsRefusedAndLeftAlone) {
  std::string path = dir_ + "/theirs";
  ASSERT_EQ(::mkdir(path.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(path.c_str(), 0755), 0);
  // The tests run as root (CI): give the directory to another user.
  ASSERT_EQ(::chown(path.c_str(), ::geteuid() + 4242, static_cast<gid_t>(-1)), 0)
      << std::strerror(errno);
  Status status = config::EnsurePrivateDirectory(path);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find(path + " belongs to uid " + std::to_string(::geteuid() + 4242)),
            std::string::npos)
      << status.message();
  EXPECT_EQ(ModeOf(path), 0755u) << "not chmodded for another owner";
}

TEST_F(PrivateDirectory, AFileIsRefused) {
  std::string path = Write("secrets", "x");
  Status status = config::EnsurePrivateDirectory(path);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find(path + " exists and is not a directory"), std::string::npos)
      << status.message();
}

}  // namespace
}  // namespace shim
