#include "kube_api_server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "subprocess.h"
#include "test_util.h"

namespace shim::testing {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;

std::string StatusJson(int code, const std::string& reason, const std::string& message) {
  return Json{{"kind", "Status"},    {"apiVersion", "v1"}, {"metadata", Json::object()},
              {"status", "Failure"}, {"message", message}, {"reason", reason},
              {"code", code}}
      .dump();
}

}  // namespace

std::string Base64(const std::string& data) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < data.size(); i += 3) {
    unsigned n = (static_cast<unsigned char>(data[i]) << 16) |
                 (static_cast<unsigned char>(data[i + 1]) << 8) |
                 static_cast<unsigned char>(data[i + 2]);
    for (int shift : {18, 12, 6, 0}) out += kAlphabet[(n >> shift) & 63];
  }
  if (i < data.size()) {
    unsigned n = static_cast<unsigned char>(data[i]) << 16;
    if (i + 1 < data.size()) n |= static_cast<unsigned char>(data[i + 1]) << 8;
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += i + 1 < data.size() ? kAlphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string MakeKubeconfig(const std::string& server, const std::string& ca_pem,
                           const std::string& token, const std::string& extra_user_yaml) {
  std::string out =
      "apiVersion: v1\n"
      "kind: Config\n"
      "clusters:\n"
      "- name: test\n"
      "  cluster:\n"
      "    server: " +
      server + "\n" +
      (ca_pem.empty() ? "" : "    certificate-authority-data: " + Base64(ca_pem) + "\n") +
      "users:\n"
      "- name: node\n"
      "  user:\n" +
      (token.empty() ? "" : "    token: " + token + "\n") + extra_user_yaml +
      (token.empty() && extra_user_yaml.empty() ? "    {}\n" : "") +
      "contexts:\n"
      "- name: test\n"
      "  context: {cluster: test, user: node}\n"
      "current-context: test\n";
  return out;
}

TestPki MakeTestPki(const std::string& dir) {
  TestPki pki{dir + "/ca.crt",
              dir + "/ca.key",
              dir + "/server.crt",
              dir + "/server.key",
              dir + "/client.crt",
              dir + "/client.key",
              ""};
  auto ec_key = std::vector<std::string>{"-newkey", "ec", "-pkeyopt",
                                         "ec_paramgen_curve:prime256v1", "-nodes"};
  std::vector<std::string> ca = {"openssl", "req", "-x509"};
  ca.insert(ca.end(), ec_key.begin(), ec_key.end());
  ca.insert(ca.end(),
            {"-days", "2", "-subj", "/CN=kube test CA", "-addext",
             "basicConstraints=critical,CA:TRUE", "-addext",
             "keyUsage=critical,keyCertSign,cRLSign", "-keyout", pki.ca_key, "-out", pki.ca_cert});
  RunOrThrow(ca);
  auto issue = [&](const std::string& cert, const std::string& key, const std::string& cn,
                   const std::string& extensions) {
    std::string csr = cert + ".csr";
    std::string ext = cert + ".ext";
    WriteFile(ext, extensions);
    std::vector<std::string> req = {"openssl", "req", "-new"};
    req.insert(req.end(), ec_key.begin(), ec_key.end());
    req.insert(req.end(), {"-subj", "/CN=" + cn, "-keyout", key, "-out", csr});
    RunOrThrow(req);
    RunOrThrow({"openssl", "x509", "-req", "-in", csr, "-CA", pki.ca_cert, "-CAkey", pki.ca_key,
                "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", cert});
  };
  issue(pki.server_cert, pki.server_key, "127.0.0.1",
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kube-api.test,DNS:registry.test\n"
        "extendedKeyUsage=serverAuth\n");
  issue(pki.client_cert, pki.client_key, "system:node:test", "extendedKeyUsage=clientAuth\n");
  pki.ca_pem = ReadFile(pki.ca_cert);
  return pki;
}

KubeApiServer::KubeApiServer(KubeApiServerOptions options) : options_(std::move(options)) {
  if (options_.port != 0) return;
  // The port is held from here on (Url() is known before Start, and stays the same across
  // Stop/Start): a socket bound to 127.0.0.1:0 that never listens. Nobody else can be given
  // that port (binding port 0, or an outgoing connection's local port), and a connection to it
  // is refused while the server is stopped. httplib's listener binds it too: both sockets have
  // SO_REUSEADDR and SO_REUSEPORT (httplib's default socket options), and only one listens.
  reserved_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int yes = 1;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (reserved_ < 0 || setsockopt(reserved_, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes) != 0 ||
      setsockopt(reserved_, SOL_SOCKET, SO_REUSEPORT, &yes, sizeof yes) != 0 ||
      bind(reserved_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      getsockname(reserved_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    std::string reason = std::strerror(errno);
    if (reserved_ >= 0) close(reserved_);
    throw std::runtime_error("KubeApiServer: cannot bind 127.0.0.1:0: " + reason);
  }
  options_.port = ntohs(address.sin_port);
}

KubeApiServer::~KubeApiServer() {
  Stop();
  if (reserved_ >= 0) close(reserved_);
}

std::string KubeApiServer::Url() const {
  return "https://127.0.0.1:" + std::to_string(port());
}

void KubeApiServer::Start() {
  if (server_) throw std::runtime_error("KubeApiServer: already running");
  {
    std::lock_guard lock(mutex_);
    stopping_ = false;
  }
  server_ = options_.client_ca_path.empty()
                ? std::make_unique<httplib::SSLServer>(options_.cert_path.c_str(),
                                                       options_.key_path.c_str())
                : std::make_unique<httplib::SSLServer>(options_.cert_path.c_str(),
                                                       options_.key_path.c_str(),
                                                       options_.client_ca_path.c_str());
  if (!server_->is_valid()) {
    server_.reset();
    throw std::runtime_error("KubeApiServer: cannot load the certificate " + options_.cert_path);
  }
  server_->set_keep_alive_max_count(100);
  auto handler = [this](const httplib::Request& req, httplib::Response& res) { Handle(req, res); };
  server_->Get(R"(/api/v1/namespaces/([^/]+)/(configmaps|secrets)(/[^/]+)?)", handler);
  if (!server_->bind_to_port("127.0.0.1", options_.port)) {
    server_.reset();
    throw std::runtime_error("KubeApiServer: cannot listen on 127.0.0.1:" +
                             std::to_string(options_.port));
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  // httplib's stop() does nothing before the accept loop runs: a Stop() right after Start()
  // would otherwise hang.
  if (!WaitUntil([this] { return server_->is_running(); }, std::chrono::seconds(10), 1ms)) {
    throw std::runtime_error("KubeApiServer: the accept loop did not start");
  }
}

void KubeApiServer::Stop() {
  if (!server_) return;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

bool KubeApiServer::Running() const {
  return server_ != nullptr;
}

std::string KubeApiServer::ObjectJson(const Key& key, const Object& object) const {
  bool secret = key.first == "secrets";
  Json out = {{"apiVersion", "v1"},
              {"kind", secret ? "Secret" : "ConfigMap"},
              {"metadata",
               {{"name", key.second},
                {"namespace", options_.namespace_},
                {"uid", "4f1a8c2e-0000-4000-8000-" + std::to_string(100000000000 + object.rv)},
                {"resourceVersion", std::to_string(object.rv)}}}};
  if (secret) {
    out["type"] = object.type;
    Json data = Json::object();
    for (const auto& [k, v] : object.data) data[k] = Base64(v);
    out["data"] = data;
  } else {
    out["data"] = object.data;
  }
  return out.dump();
}

void KubeApiServer::Publish(const Key& key, const std::string& type, std::string object) {
  events_.push_back(Event{next_rv_ - 1, key, type, std::move(object)});
  changed_.notify_all();
}

std::string KubeApiServer::Set(const Key& key, const std::string& type,
                               const std::map<std::string, std::string>& data) {
  std::lock_guard lock(mutex_);
  auto it = objects_.find(key);
  bool existed = it != objects_.end();
  Object& object = objects_[key];
  object.type = type;
  object.data = data;
  object.rv = next_rv_++;
  if (key.first == "configmaps") configmap_rv_ = object.rv;
  Publish(key, existed ? "MODIFIED" : "ADDED", ObjectJson(key, object));
  return std::to_string(object.rv);
}

void KubeApiServer::Remove(const Key& key) {
  std::lock_guard lock(mutex_);
  auto it = objects_.find(key);
  if (it == objects_.end()) return;
  it->second.rv = next_rv_++;
  if (key.first == "configmaps") configmap_rv_ = it->second.rv;
  std::string last = ObjectJson(key, it->second);
  objects_.erase(it);
  Publish(key, "DELETED", last);
}

std::string KubeApiServer::SetData(const std::map<std::string, std::string>& data) {
  return Set({"configmaps", options_.name}, "", data);
}

void KubeApiServer::Delete() {
  Remove({"configmaps", options_.name});
}

std::string KubeApiServer::SetSecret(const std::string& name, const std::string& type,
                                     const std::map<std::string, std::string>& data) {
  return Set({"secrets", name}, type, data);
}

void KubeApiServer::DeleteSecret(const std::string& name) {
  Remove({"secrets", name});
}

void KubeApiServer::ForbidSecret(const std::string& name, bool forbidden) {
  std::lock_guard lock(mutex_);
  std::erase(forbidden_secrets_, name);
  if (forbidden) forbidden_secrets_.push_back(name);
}

std::string KubeApiServer::ResourceVersion() const {
  std::lock_guard lock(mutex_);
  return std::to_string(configmap_rv_);
}

void KubeApiServer::SetAuthFailure(int status) {
  std::lock_guard lock(mutex_);
  auth_failure_ = status;
}

void KubeApiServer::Compact() {
  std::lock_guard lock(mutex_);
  events_.clear();
  // As etcd: history before the latest revision is gone; watching from it is still fine.
  compacted_rv_ = next_rv_ - 1;
}

void KubeApiServer::DropWatches() {
  {
    std::lock_guard lock(mutex_);
    ++drop_generation_;
  }
  changed_.notify_all();
}

KubeApiServer::Counts KubeApiServer::counts() const {
  std::lock_guard lock(mutex_);
  return counts_;
}

std::vector<std::string> KubeApiServer::RequestLog() const {
  std::lock_guard lock(mutex_);
  return log_;
}

std::vector<std::string> KubeApiServer::AuthorizationHeaders() const {
  std::lock_guard lock(mutex_);
  return authorizations_;
}

int KubeApiServer::OpenWatches() const {
  std::lock_guard lock(mutex_);
  return open_watches_;
}

bool KubeApiServer::WaitForOpenWatches(int n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return open_watches_ >= n; });
}

bool KubeApiServer::WaitForRequests(int n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return counts_.total >= n; });
}

bool KubeApiServer::Authorized(const httplib::Request& req, httplib::Response& res) {
  std::string header = req.get_header_value("Authorization");
  authorizations_.push_back(header);
  int failure = auth_failure_;
  // With a client CA, TLS already demanded a certificate signed by it: that is the identity.
  bool ok = !options_.client_ca_path.empty() || header == "Bearer " + options_.token;
  if (failure == 0 && !ok) failure = 401;
  if (failure == 0) return true;
  ++counts_.unauthorized;
  res.status = failure;
  res.set_content(failure == 401
                      ? StatusJson(401, "Unauthorized", "Unauthorized")
                      : StatusJson(403, "Forbidden",
                                   "configmaps \"" + options_.name +
                                       "\" is forbidden: User \"system:node:test\" cannot get "
                                       "resource \"configmaps\" in API group \"\" in the "
                                       "namespace \"" +
                                       options_.namespace_ + "\""),
                  "application/json");
  return false;
}

void KubeApiServer::Handle(const httplib::Request& req, httplib::Response& res) {
  std::string ns = req.matches[1];
  std::string resource = req.matches[2];
  std::string name = req.matches[3].length() > 0 ? req.matches[3].str().substr(1) : "";
  bool watch = req.get_param_value("watch") == "1" || req.get_param_value("watch") == "true";
  bool secret = resource == "secrets";
  {
    std::lock_guard lock(mutex_);
    ++counts_.total;
    std::string line = "GET " + req.path;
    std::string query;
    for (const auto& [key, value] : req.params)
      query += (query.empty() ? "?" : "&") + key + "=" + value;
    log_.push_back(line + query);
    changed_.notify_all();
    if (!Authorized(req, res)) return;
    // RBAC with resourceNames: a watch is authorized for the name its fieldSelector gives.
    std::string selector = req.get_param_value("fieldSelector");
    std::string named = !name.empty()                            ? name
                        : selector.starts_with("metadata.name=") ? selector.substr(14)
                                                                 : "";
    if (secret && (named.empty() || std::find(forbidden_secrets_.begin(), forbidden_secrets_.end(),
                                              named) != forbidden_secrets_.end())) {
      ++counts_.unauthorized;
      res.status = 403;
      std::string verb = !name.empty() ? "get" : watch ? "watch" : "list";
      res.set_content(StatusJson(403, "Forbidden",
                                 "secrets \"" + named +
                                     "\" is forbidden: User "
                                     "\"system:node:test\" cannot " +
                                     verb +
                                     " resource \"secrets\" in API group \"\" in the "
                                     "namespace \"" +
                                     ns + "\""),
                      "application/json");
      return;
    }
    if (!name.empty()) {
      ++(secret ? counts_.secret_gets : counts_.gets);
      auto it = objects_.find(Key{resource, name});
      if (ns != options_.namespace_ || it == objects_.end()) {
        res.status = 404;
        res.set_content(StatusJson(404, "NotFound", resource + " \"" + name + "\" not found"),
                        "application/json");
        return;
      }
      res.set_content(ObjectJson(it->first, it->second), "application/json");
      return;
    }
    if (!watch) {
      res.status = 400;
      res.set_content(StatusJson(400, "BadRequest", "this test server only watches lists"),
                      "application/json");
      return;
    }
    ++(secret ? counts_.secret_watches : counts_.watches);
  }
  HandleWatch(req, res, resource);
}

void KubeApiServer::HandleWatch(const httplib::Request& req, httplib::Response& res,
                                const std::string& resource) {
  struct WatchState {
    long long after_rv = 0;            // send events with rv > this
    std::vector<std::string> pending;  // lines to send first
    bool gone = false;
    int generation = 0;
    std::chrono::steady_clock::time_point deadline;
    bool counted = false;
    bool in_namespace = true;
    std::string resource;
    std::string name;  // from the fieldSelector; "" = every object of the resource
  };
  auto state = std::make_shared<WatchState>();
  std::string rv_text = req.get_param_value("resourceVersion");
  std::string selector = req.get_param_value("fieldSelector");
  long long timeout_seconds = 1800;
  if (req.has_param("timeoutSeconds")) {
    timeout_seconds = std::stoll(req.get_param_value("timeoutSeconds"));
  }
  state->deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  state->resource = resource;
  if (selector.starts_with("metadata.name=")) state->name = selector.substr(14);
  auto matches = [state](const Key& key) {
    return state->in_namespace && key.first == state->resource &&
           (state->name.empty() || key.second == state->name);
  };
  {
    std::lock_guard lock(mutex_);
    state->generation = drop_generation_;
    state->in_namespace = req.matches[1] == options_.namespace_;
    if (rv_text.empty() || rv_text == "0") {
      // "Most recent": the current objects first, as synthetic ADDED events.
      for (const auto& [key, object] : objects_) {
        if (!matches(key)) continue;
        state->pending.push_back(
            Json{{"type", "ADDED"}, {"object", Json::parse(ObjectJson(key, object))}}.dump());
      }
      state->after_rv = next_rv_ - 1;
    } else {
      long long rv = std::stoll(rv_text);
      if (rv < compacted_rv_) {
        state->gone = true;
        state->pending.push_back(
            Json{{"type", "ERROR"},
                 {"object", Json::parse(StatusJson(410, "Expired",
                                                   "too old resource version: " + rv_text + " (" +
                                                       std::to_string(compacted_rv_) + ")"))}}
                .dump());
      }
      state->after_rv = rv;
    }
    ++open_watches_;
    state->counted = true;
    changed_.notify_all();
  }
  res.set_chunked_content_provider(
      "application/json",
      [this, state, matches](size_t, httplib::DataSink& sink) {
        std::unique_lock lock(mutex_);
        auto flush = [&] {
          for (const auto& line : state->pending) {
            std::string text = line + "\n";
            lock.unlock();
            bool ok = sink.write(text.data(), text.size());
            lock.lock();
            if (!ok) return false;
          }
          state->pending.clear();
          return true;
        };
        if (!flush()) return false;
        if (state->gone) {
          sink.done();
          return true;
        }
        changed_.wait_for(lock, 50ms);
        if (stopping_ || drop_generation_ != state->generation) return false;  // abrupt end
        for (const Event& event : events_) {
          if (event.rv > state->after_rv) {
            if (matches(event.key)) {
              state->pending.push_back(
                  Json{{"type", event.type}, {"object", Json::parse(event.object)}}.dump());
            }
            state->after_rv = event.rv;
          }
        }
        if (!flush()) return false;
        if (std::chrono::steady_clock::now() >= state->deadline) sink.done();
        return true;
      },
      [this, state](bool) {
        std::lock_guard lock(mutex_);
        if (state->counted) --open_watches_;
        state->counted = false;
        changed_.notify_all();
      });
}

}  // namespace shim::testing
