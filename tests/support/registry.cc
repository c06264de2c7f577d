#include "registry.h"

#include <httplib.h>

#include <sstream>
#include <stdexcept>

#include "test_ca.h"
#include "test_util.h"

namespace shim::testing {

Registry::Registry(RegistryOptions options) : options_(std::move(options)) {
  if (options_.port == 0) options_.port = FreeLoopbackPort();
  dir_ = std::make_unique<TempDir>("shim-reg");
  TestCa ca;
  ServerCert cert = ca.IssueServerCert(dir_->path(), {options_.host_name});
  std::string data = dir_->MakeDir("data");
  log_path_ = dir_->File("registry.log");

  std::ostringstream config;
  config << "version: 0.1\n"
         << "log:\n"
         << "  level: info\n"
         << "  formatter: text\n"
         << "  accesslog:\n"
         << "    disabled: false\n"
         << "storage:\n"
         << "  filesystem:\n"
         << "    rootdirectory: " << data << "\n"
         << "  delete:\n"
         << "    enabled: true\n"
         << "http:\n"
         << "  addr: 127.0.0.1:" << options_.port << "\n"
         << "  host: " << Address() << "\n"
         << "  tls:\n"
         << "    certificate: " << cert.cert_path << "\n"
         << "    key: " << cert.key_path << "\n";
  if (!options_.username.empty()) {
    // The registry would invent a user of its own if the file were missing: write it first.
    std::string line = RunOrThrow({"htpasswd", "-Bbn", options_.username, options_.password});
    WriteFile(dir_->File("htpasswd"), line.substr(0, line.find('\n')) + "\n", 0600);
    config << "auth:\n"
           << "  htpasswd:\n"
           << "    realm: shim-test\n"
           << "    path: " << dir_->File("htpasswd") << "\n";
  }
  WriteFile(dir_->File("config.yml"), config.str());

  process_ = std::make_unique<Subprocess>(
      SubprocessOptions{.argv = {"docker-registry", "serve", dir_->File("config.yml")},
                        .env = {},
                        .log_path = log_path_,
                        .working_dir = dir_->path()});
  Start();
}

Registry::~Registry() {
  Stop();
}

void Registry::Start() {
  process_->Start();
  bool up = WaitUntil(
      [this] {
        if (!process_->Running()) return true;
        int status = HttpGet("/v2/");
        return status == 200 || status == 401;
      },
      std::chrono::seconds(30), std::chrono::milliseconds(50));
  if (!process_->Running() || !up) {
    std::string why =
        process_->Running() ? "no answer on /v2/ within 30 s" : process_->last_exit()->ToString();
    Stop();
    throw std::runtime_error("registry " + Address() + " did not come up (" + why + "):\n" +
                             TailLines(LogText()));
  }
}

void Registry::Stop() {
  if (process_) process_->Stop(std::chrono::seconds(5));
}

bool Registry::Running() {
  return process_ && process_->Running();
}

std::string Registry::Address() const {
  return "https://" + Host();
}

std::string Registry::Host() const {
  return options_.host_name + ":" + std::to_string(options_.port);
}

std::string Registry::ImageName(std::string_view repo_tag) const {
  return Host() + "/" + std::string(repo_tag);
}

int Registry::HttpGet(std::string_view path, bool with_auth) const {
  httplib::Client client(Address());
  client.set_connection_timeout(2);
  client.set_read_timeout(2);
  // The sandbox's bundle holds the test CA; naming the CA file too works outside it.
  if (TestCa::Available()) client.set_ca_cert_path(TestCa().cert_path());
  if (with_auth && !options_.username.empty()) {
    client.set_basic_auth(options_.username, options_.password);
  }
  httplib::Result result = client.Get(std::string(path));
  return result ? result->status : 0;
}

int Registry::CountRequests(std::string_view method, std::string_view path, int status) const {
  // Access log lines (gorilla combined format):
  // 127.0.0.1 - - [date] "GET /v2/library/nginx/manifests/latest HTTP/1.1" 401 87 "" "ua"
  std::string needle = "\"" + std::string(method) + " " + std::string(path) + " HTTP/";
  std::istringstream log(LogText());
  std::string line;
  int count = 0;
  while (std::getline(log, line)) {
    size_t at = line.find(needle);
    if (at == std::string::npos) continue;
    if (status != 0) {
      size_t end = line.find('"', at + needle.size());
      if (end == std::string::npos) continue;
      std::istringstream rest(line.substr(end + 1));
      int code = 0;
      if (!(rest >> code) || code != status) continue;
    }
    ++count;
  }
  return count;
}

std::string Registry::LogText() const {
  return ReadFileIfExists(log_path_);
}

}  // namespace shim::testing
