// A real registry (Debian's docker-registry 2.8) for end-to-end tests: TLS with a certificate
// from the test CA for its host name, htpasswd credentials, filesystem storage in a private
// temporary directory, listening on 127.0.0.1:<free port>. Host names such as registry-a.test
// resolve to 127.0.0.1 only inside tests/e2e/sandbox.sh. Can be stopped and started again on
// the same storage and port (failover and recovery tests). For tests and test tools; one owner
// thread.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "subprocess.h"
#include "temp_dir.h"

namespace shim::testing {

struct RegistryOptions {
  std::string host_name = "registry-a.test";  // must resolve to 127.0.0.1 (sandbox.sh)
  std::string username = "shim-user";         // "" = no authentication at all
  std::string password = "shim-pass";
  int port = 0;  // 0 = a free loopback port
};

class Registry {
 public:
  // Prepares certificate, htpasswd and config, then Start()s. Throws std::runtime_error with
  // the registry's log when it does not come up.
  explicit Registry(RegistryOptions options = {});
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Starts (again) on the same port and storage and waits until GET /v2/ answers (200 or 401).
  void Start();
  // SIGTERM, then SIGKILL; afterwards connections to the port are refused.
  void Stop();
  bool Running();

  std::string Address() const;  // "https://registry-a.test:PORT"
  std::string Host() const;     // "registry-a.test:PORT", as it appears in image names
  const std::string& host_name() const { return options_.host_name; }
  int port() const { return options_.port; }
  const std::string& username() const { return options_.username; }
  const std::string& password() const { return options_.password; }
  // Host() + "/" + repo_tag, e.g. "registry-a.test:PORT/library/nginx:latest".
  std::string ImageName(std::string_view repo_tag) const;

  // HTTP status of a GET on `path` (e.g. "/v2/"), with the registry's credentials when
  // `with_auth`; 0 when the connection fails. Not counted by tests of pulls: it is our own.
  int HttpGet(std::string_view path, bool with_auth = false) const;

  // How many requests `METHOD PATH` the registry logged (access log, across restarts), e.g.
  // CountRequests("GET", "/v2/library/nginx/manifests/latest"). HEAD is counted separately.
  // `status` 0 counts any answer; otherwise only answers with that HTTP status.
  int CountRequests(std::string_view method, std::string_view path, int status = 0) const;

  std::string LogText() const;
  const std::string& dir() const { return dir_->path(); }

 private:
  RegistryOptions options_;
  std::unique_ptr<TempDir> dir_;
  std::string log_path_;
  std::unique_ptr<Subprocess> process_;
};

}  // namespace shim::testing
