// The command line, run as the built binary: `rewrite` output, --dry-run masking, --version,
// exit codes. SHIM_BINARY is the path of image-cri-shim, set by CMake.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace {

const std::string kSecret = "pa55:w0rd-XYZ";
const std::string kBackupSecret = "hunter2-backup";

struct Output {
  int code = -1;
  std::string out;
  std::string err;
  std::string all() const { return out + err; }
};

class Cli : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir() + "/cli_test_" + std::to_string(::getpid());
    ASSERT_EQ(std::system(("mkdir -p '" + dir_ + "'").c_str()), 0);
    config_ = Write("config.yaml",
                    "address: https://registry.company.com\n"
                    "auth: \"admin:" +
                        kSecret +
                        "\"\n"
                        "registries:\n"
                        "- address: https://harbor.example.com/proxy-cache\n"
                        "  auth: robot:" +
                        kBackupSecret +
                        "\n"
                        "  prefixes: [quay.io/]\n"
                        "- address: http://mirror.local:5000\n"
                        "cri: " +
                        dir_ + "/no-runtime.sock\nstateDir: " + dir_ + "/state\n");
  }
  void TearDown() override {
    std::error_code ignored;  // what a failed test left is removed as far as it can be
    std::filesystem::remove_all(dir_, ignored);
  }

  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  Output Run(const std::string& args) {
    std::string err_path = dir_ + "/stderr";
    std::string command = std::string(SHIM_BINARY) + " " + args + " 2>'" + err_path + "'";
    Output result;
    FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) return result;
    char buffer[4096];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.out.append(buffer, n);
    int status = ::pclose(pipe);
    result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::ifstream err(err_path);
    std::stringstream text;
    text << err.rdbuf();
    result.err = text.str();
    return result;
  }

  std::string dir_;
  std::string config_;
};

TEST_F(Cli, RewritePrintsCandidatesWithUserButNoPassword) {
  Output r = Run("rewrite -f " + config_ +
                 " nginx:latest quay.io/org/app:1 registry.k8s.io/pause:3.9 "
                 "harbor.example.com/proxy-cache/team/app:2");
  EXPECT_EQ(r.code, 0) << r.all();
  EXPECT_EQ(r.out,
            "nginx:latest -> registry.company.com/library/nginx:latest (registry "
            "registry.company.com, user admin)\n"
            "nginx:latest -> mirror.local:5000/library/nginx:latest (registry mirror.local:5000, "
            "anonymous)\n"
            "quay.io/org/app:1 -> registry.company.com/org/app:1 (registry registry.company.com, "
            "user admin)\n"
            "quay.io/org/app:1 -> harbor.example.com/proxy-cache/org/app:1 (registry "
            "harbor.example.com/proxy-cache, user robot)\n"
            "quay.io/org/app:1 -> mirror.local:5000/org/app:1 (registry mirror.local:5000, "
            "anonymous)\n"
            "registry.k8s.io/pause:3.9 -> registry.company.com/pause:3.9 (registry "
            "registry.company.com, user admin)\n"
            "registry.k8s.io/pause:3.9 -> mirror.local:5000/pause:3.9 (registry "
            "mirror.local:5000, anonymous)\n"
            "harbor.example.com/proxy-cache/team/app:2 -> "
            "harbor.example.com/proxy-cache/team/app:2 (registry harbor.example.com/proxy-cache, "
            "user robot)\n");
  EXPECT_EQ(r.all().find(kSecret), std::string::npos);
  EXPECT_EQ(r.all().find(kBackupSecret), std::string::npos);
}

TEST_F(Cli, RewriteShowsWhatAPodInANamespaceGetsOrTheRuleThatRefusesIt) {
  std::string path =
      Write("policy.yaml",
            "address: registry.company.com\nauth: admin:" + std::string(kSecret) +
                "\nregistries:\n- address: tenant.example.com\n  auth: t:" + kBackupSecret +
                "\n  namespaces: [\"tenant-*\"]\ndeny: [docker.io/blocked/]\n"
                "stateDir: " +
                dir_ + "/state\n");
  Output pod = Run("rewrite --file " + path + " --namespace tenant-b app:1");
  EXPECT_EQ(pod.code, 0) << pod.all();
  EXPECT_EQ(pod.out,
            "app:1 -> registry.company.com/library/app:1 (registry registry.company.com, user "
            "admin)\n"
            "app:1 -> tenant.example.com/library/app:1 (registry tenant.example.com, user t)\n");
  Output no_pod = Run("rewrite --file " + path + " app:1");
  EXPECT_EQ(no_pod.out,
            "app:1 -> registry.company.com/library/app:1 (registry registry.company.com, user "
            "admin)\n");
  Output refused = Run("rewrite --file " + path + " -n tenant-b blocked/x:1 app:1");
  EXPECT_EQ(refused.code, 1) << refused.all();
  EXPECT_EQ(refused.out.substr(0, refused.out.find('\n') + 1),
            "blocked/x:1 -> refused: deny \"docker.io/blocked/\" matches it\n");
  EXPECT_NE(refused.out.find("app:1 -> tenant.example.com/library/app:1"), std::string::npos);
  // An image id says nothing the policy could check: with a policy in force it is refused.
  std::string id = "sha256:" + std::string(64, 'e');
  Output by_id = Run("rewrite --file " + path + " " + id);
  EXPECT_EQ(by_id.code, 1) << by_id.all();
  EXPECT_EQ(by_id.out, id + " -> refused: it is not an image name that `allow` and `deny` can be "
                            "checked against\n");
  for (const Output& r : {pod, no_pod, refused}) {
    EXPECT_EQ(r.all().find(kSecret), std::string::npos);
    EXPECT_EQ(r.all().find(kBackupSecret), std::string::npos);
  }
}

TEST_F(Cli, RewriteShowsTheOriginWhenFallbackIsOn) {
  std::string path = Write(
      "fallback.yaml",
      "address: registry.company.com\nfallbackToOrigin: true\nstateDir: " + dir_ + "/state\n");
  Output r = Run("rewrite --file " + path + " busybox");
  EXPECT_EQ(r.code, 0) << r.all();
  EXPECT_EQ(r.out,
            "busybox -> registry.company.com/library/busybox:latest (registry "
            "registry.company.com, anonymous)\n"
            "busybox -> docker.io/library/busybox:latest (origin, caller's credentials)\n");
}

TEST_F(Cli, RewriteReportsABadReferenceAndStillPrintsTheOthers) {
  Output r = Run("rewrite -f " + config_ + " Bad/Name nginx");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("\"Bad/Name\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("lower case"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("nginx -> registry.company.com/library/nginx:latest"), std::string::npos)
      << r.out;
}

TEST_F(Cli, RewriteNeedsAnImage) {
  Output r = Run("rewrite -f " + config_);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("IMAGE"), std::string::npos) << r.err;
}

TEST_F(Cli, DryRunMasksPasswords) {
  Output r = Run("--dry-run -f " + config_);
  EXPECT_NE(r.out.find("auth: admin:****"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("auth: robot:****"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("address: https://harbor.example.com/proxy-cache"), std::string::npos);
  EXPECT_NE(r.out.find("timeout: 15m"), std::string::npos) << r.out;
  EXPECT_EQ(r.all().find(kSecret), std::string::npos) << r.all();
  EXPECT_EQ(r.all().find("w0rd"), std::string::npos) << r.all();
  EXPECT_EQ(r.all().find(kBackupSecret), std::string::npos) << r.all();
}

TEST_F(Cli, DryRunFailsOnConfigurationErrors) {
  std::string path =
      Write("bad.yaml", "address: ftp://x\nauth: \"admin:" + kSecret + "\"\ntimeout: soon\n");
  Output r = Run("--dry-run -f " + path);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find(path + ": address: \"ftp://x\" is not an http(s) URL"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find(path + ": timeout: \"soon\" is not a duration"), std::string::npos) << r.err;
  EXPECT_EQ(r.all().find(kSecret), std::string::npos) << r.all();
}

TEST_F(Cli, DryRunOnAMissingFileNamesIt) {
  Output r = Run("--dry-run -f " + dir_ + "/absent.yaml");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find(dir_ + "/absent.yaml"), std::string::npos) << r.err;
}

TEST_F(Cli, DryRunPrintsWarnings) {
  std::string path =
      Write("warn.yaml", "address: r.example.com\ncolour: blue\nstateDir: " + dir_ + "/state\n");
  Output r = Run("--dry-run -f " + path);
  EXPECT_NE(r.err.find("warning: " + path + ": colour: unknown key"), std::string::npos) << r.err;
}

TEST_F(Cli, Version) {
  Output r = Run("--version");
  EXPECT_EQ(r.code, 0);
  EXPECT_TRUE(r.out.starts_with("image-cri-shim 0.1.0 (commit ")) << r.out;
  EXPECT_NE(r.out.find("), CRI runtime.v1 and runtime.v1alpha2\n"), std::string::npos) << r.out;
}

TEST_F(Cli, HelpAndUnknownFlags) {
  Output help = Run("--help");
  EXPECT_EQ(help.code, 0);
  for (const char* word : {"--file", "--dry-run", "--debug", "--version", "rewrite"}) {
    EXPECT_NE(help.out.find(word), std::string::npos) << word << "\n" << help.out;
  }
  Output bad = Run("--no-such-flag");
  EXPECT_EQ(bad.code, 2);
}

}  // namespace
