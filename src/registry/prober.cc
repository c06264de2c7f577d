#include "registry/prober.h"

#include <cctype>
#include <map>
#include <mutex>

#include "net/http_client.h"
#include "util/file.h"
#include "util/log.h"

#include <spdlog/spdlog.h>

namespace shim::registry {

namespace {

// A failure to read a registry's CA is logged when first seen, not at every probe (the prober
// retries a down registry every few seconds): once per registry and reason, and again after the
// file has been read once more, so that a later breakage is logged too.
class CaFailureLog {
 public:
  void Failed(const std::string& registry, const std::string& error) {
    std::lock_guard lock(mutex_);
    std::string& last = last_error_[registry];
    if (last == error) return;
    last = error;
    spdlog::warn(
        "cannot read the CA file of a registry; its probes fail until it can be read "
        "registry={} error={}",
        registry, log::Quoted(error));
  }
  void Succeeded(const std::string& registry) {
    std::lock_guard lock(mutex_);
    last_error_.erase(registry);
  }

 private:
  std::mutex mutex_;
  std::map<std::string, std::string> last_error_;  // GUARDED_BY(mutex_); registry -> error
};

// A query value, percent-encoded (RFC 3986 unreserved characters kept).
std::string QueryEscape(std::string_view value) {
  std::string out;
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789ABCDEF";
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

CaFailureLog& CaFailures() {
  static auto* log = new CaFailureLog;  // never destroyed: safe for a probe running at exit
  return *log;
}

// The registry's own `ca`, trusted in addition to the system's store (not instead). Empty = no
// `ca`. An unreadable `ca` is an error: probing without it would judge the registry by another
// trust than the one configured.
StatusOr<std::string> RegistryCa(const config::Registry& registry) {
  if (registry.insecure_skip_verify || registry.ca_file.empty()) return std::string();
  StatusOr<std::string> ca = util::ReadWholeFile(registry.ca_file);
  if (!ca.ok()) {
    CaFailures().Failed(registry.address, ca.status().message());
    return Status::Error(ca.status().message() +
                         " (the `ca` of this registry); fix the path or the file's permissions");
  }
  CaFailures().Succeeded(registry.address);
  return ca;
}

struct Response {
  long status = 0;
  std::string www_authenticate;
  std::string error;  // transport failure, empty when an HTTP answer came
};

// One GET through net::HttpGet: the system's trust plus `ca`, or none with insecureSkipVerify;
// a proxy as containerd would use one. `credentials` empty = anonymous.
Response Get(const config::Registry& registry, const std::string& ca, const std::string& url,
             const config::Credentials* credentials, std::chrono::milliseconds timeout,
             const net::ProxyEnv* proxy) {
  net::HttpRequest request;
  request.url = url;
  request.tls.verify = !registry.insecure_skip_verify;
  request.tls.system_roots = true;
  request.tls.ca_pem = ca;
  request.tls.what = "registry " + registry.address;
  request.connect_timeout = timeout;
  request.read_timeout = timeout;
  request.total_timeout = timeout;
  request.proxy_env = proxy;
  if (credentials != nullptr && !credentials->empty()) {
    request.headers.emplace_back(
        "Authorization", net::BasicAuthorization(credentials->username, credentials->password));
  }
  net::HttpResponse answer = net::HttpGet(request, nullptr);
  Response response;
  if (!answer.error.empty()) {
    response.error = answer.error;
    return response;
  }
  response.status = answer.status;
  auto challenge = answer.headers.find("www-authenticate");
  if (challenge != answer.headers.end()) response.www_authenticate = challenge->second;
  return response;
}

// `Bearer realm="https://auth/token",service="registry"` -> the realm URL with its service.
std::string TokenUrl(const std::string& challenge) {
  auto param = [&](const std::string& name) -> std::string {
    auto at = challenge.find(name + "=\"");
    if (at == std::string::npos) return "";
    at += name.size() + 2;
    auto end = challenge.find('"', at);
    return end == std::string::npos ? "" : challenge.substr(at, end - at);
  };
  std::string realm = param("realm");
  if (realm.empty()) return "";
  std::string service = param("service");
  if (service.empty()) return realm;
  return realm + (realm.find('?') == std::string::npos ? "?" : "&") +
         "service=" + QueryEscape(service);
}

}  // namespace

ProbeResult ProbeRegistry(const config::Registry& registry, bool check_credentials,
                          std::chrono::milliseconds timeout, const net::ProxyEnv* proxy) {
  // The API root is at the host, whatever path the registry address carries.
  std::string root = registry.scheme + "://" + registry.host + "/v2/";
  if (registry.host == "docker.io") root = "https://registry-1.docker.io/v2/";
  StatusOr<std::string> ca = RegistryCa(registry);
  if (!ca.ok()) return {ProbeResult::State::kDown, ca.status().message()};
  Response anonymous = Get(registry, *ca, root, nullptr, timeout, proxy);
  if (!anonymous.error.empty()) return {ProbeResult::State::kDown, anonymous.error};
  if (anonymous.status != 200 && anonymous.status != 401) {
    return {ProbeResult::State::kDown,
            "GET /v2/ answered HTTP " + std::to_string(anonymous.status)};
  }
  if (!check_credentials || registry.auth.empty() || anonymous.status == 200) {
    return {ProbeResult::State::kUp, ""};
  }
  const std::string& challenge = anonymous.www_authenticate;
  bool bearer = challenge.size() >= 6 &&
                (challenge.compare(0, 6, "Bearer") == 0 || challenge.compare(0, 6, "bearer") == 0);
  std::string url = bearer ? TokenUrl(challenge) : root;
  if (url.empty()) return {ProbeResult::State::kUp, "credentials not checked: no token realm"};
  Response with = Get(registry, *ca, url, &registry.auth, timeout, proxy);
  if (!with.error.empty()) return {ProbeResult::State::kDown, with.error};
  if (with.status == 200) return {ProbeResult::State::kUp, ""};
  if (with.status == 401 || with.status == 403) {
    return {ProbeResult::State::kCredentialsRejected,
            "HTTP " + std::to_string(with.status) + " for user " + registry.auth.username};
  }
  return {ProbeResult::State::kDown,
          "credential check answered HTTP " + std::to_string(with.status)};
}

Prober::Prober(RegistryHealth& health, const config::ConfigStore& store, ProbeFunction probe)
    : health_(health), store_(store), probe_(std::move(probe)) {
  if (!probe_) probe_ = [](const config::Registry& r) { return ProbeRegistry(r, false); };
}

Prober::~Prober() {
  Stop();
}

void Prober::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void Prober::Stop() {
  stop_ = true;
  health_.Wake();
  if (thread_.joinable()) thread_.join();
}

void Prober::Loop() {
  while (!stop_) {
    auto next = health_.NextProbeAt();
    // With nothing down the thread sleeps until a pull marks something down.
    health_.WaitForChange(next ? *next : std::chrono::steady_clock::now() + std::chrono::hours(1));
    if (stop_) return;
    auto config = store_.Get();
    std::vector<std::string> configured;
    for (const auto& r : config->registries) configured.push_back(r.address);
    health_.Retain(configured);
    for (const auto& address : health_.DueForProbe()) {
      if (stop_) return;
      for (const auto& r : config->registries) {
        if (r.address != address) continue;
        ProbeResult result = probe_(r);
        if (result.state == ProbeResult::State::kUp) {
          health_.MarkUp(address);
        } else {
          spdlog::debug("registry still down registry={} reason={}", address,
                        log::Quoted(result.detail));
          health_.ProbeFailed(address, result.detail);
        }
      }
    }
  }
}

}  // namespace shim::registry
