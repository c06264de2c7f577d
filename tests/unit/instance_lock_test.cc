// The instance lock: one shim per socket, and a lock path that is a link or not a regular file
// is refused without writing anything through it (the shim runs as root).
#include "daemon/instance_lock.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace shim::daemon {
namespace {

namespace fs = std::filesystem;

class InstanceLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/instance-lock-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    lock_path_ = dir_ + "/shim.sock.lock";
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string WriteFile(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  static std::string Slurp(const std::string& path) {
    std::ifstream in(path);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
  }
  // The refusal names the path, says what is there, and what to do.
  void ExpectRefused(const Status& status, const std::string& kind) {
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.message().find(lock_path_), std::string::npos) << status.message();
    EXPECT_NE(status.message().find(kind), std::string::npos) << status.message();
    EXPECT_NE(status.message().find("remove it"), std::string::npos) << status.message();
  }

  std::string dir_;
  std::string lock_path_;
};

TEST_F(InstanceLockTest, AcquiresAndWritesItsPid) {
  InstanceLock lock;
  ASSERT_TRUE(lock.Acquire(lock_path_).ok());
  EXPECT_EQ(Slurp(lock_path_), std::to_string(getpid()) + "\n");
  struct stat st {};
  ASSERT_EQ(lstat(lock_path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(InstanceLockTest, ASecondInstanceIsRefusedNamingTheHolderUntilTheFirstEnds) {
  {
    InstanceLock first;
    ASSERT_TRUE(first.Acquire(lock_path_).ok());
    InstanceLock second;  // flock conflicts between two opens, even in one process
    Status status = second.Acquire(lock_path_);
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.message().find("pid " + std::to_string(getpid())), std::string::npos)
        << status.message();
  }
  InstanceLock again;
  EXPECT_TRUE(again.Acquire(lock_path_).ok());
}

TEST_F(InstanceLockTest, AStaleLockFileIsTakenOver) {
  WriteFile("shim.sock.lock", "999999999\n");
  InstanceLock lock;
  ASSERT_TRUE(lock.Acquire(lock_path_).ok());
  EXPECT_EQ(Slurp(lock_path_), std::to_string(getpid()) + "\n");
}

TEST_F(InstanceLockTest, ASymbolicLinkIsRefusedAndItsTargetLeftAlone) {
  std::string target = WriteFile("precious", "precious content\n");
  ASSERT_EQ(symlink(target.c_str(), lock_path_.c_str()), 0);
  InstanceLock lock;
  ExpectRefused(lock.Acquire(lock_path_), "symbolic link");
  EXPECT_EQ(Slurp(target), "precious content\n");
}

TEST_F(InstanceLockTest, ADanglingSymbolicLinkIsRefusedAndCreatesNothing) {
  std::string target = dir_ + "/elsewhere";
  ASSERT_EQ(symlink(target.c_str(), lock_path_.c_str()), 0);
  InstanceLock lock;
  ExpectRefused(lock.Acquire(lock_path_), "symbolic link");
  EXPECT_FALSE(fs::exists(target));
}

TEST_F(InstanceLockTest, AHardLinkIsRefusedAndItsOtherNameLeftAlone) {
  std::string target = WriteFile("precious", "precious content\n");
  ASSERT_EQ(link(target.c_str(), lock_path_.c_str()), 0);
  InstanceLock lock;
  ExpectRefused(lock.Acquire(lock_path_), "hard links");
  EXPECT_EQ(Slurp(target), "precious content\n");
}

TEST_F(InstanceLockTest, ADirectoryIsRefused) {
  ASSERT_EQ(mkdir(lock_path_.c_str(), 0700), 0);
  InstanceLock lock;
  ExpectRefused(lock.Acquire(lock_path_), "a directory");
}

TEST_F(InstanceLockTest, AFifoIsRefusedWithoutBlocking) {
  ASSERT_EQ(mkfifo(lock_path_.c_str(), 0600), 0);
  InstanceLock lock;
  ExpectRefused(lock.Acquire(lock_path_), "a fifo");
}

}  // namespace
}  // namespace shim::daemon
