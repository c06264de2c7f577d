#include "registry/prober.h"

#include <curl/curl.h>

#include <map>
#include <mutex>

#include "util/file.h"
#include "util/log.h"

#include <spdlog/spdlog.h>

namespace shim::registry {

namespace {

void InitCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// The system's trust store on Debian and Ubuntu; elsewhere the registry's CA alone is trusted.
constexpr const char* kSystemBundle = "/etc/ssl/certs/ca-certificates.crt";

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

CaFailureLog& CaFailures() {
  static auto* log = new CaFailureLog;  // never destroyed: safe for a probe running at exit
  return *log;
}

// The trust bundle for `registry`: the system's CAs and the registry's own `ca` (in addition,
// not instead). Empty bundle = libcurl's default store. An unreadable `ca` is an error: probing
// without it would judge the registry by another trust than the one configured.
StatusOr<std::string> TrustBundle(const config::Registry& registry) {
  if (registry.insecure_skip_verify || registry.ca_file.empty()) return std::string();
  StatusOr<std::string> ca = util::ReadWholeFile(registry.ca_file);
  if (!ca.ok()) {
    CaFailures().Failed(registry.address, ca.status().message());
    return Status::Error(ca.status().message() +
                         " (the `ca` of this registry); fix the path or the file's permissions");
  }
  CaFailures().Succeeded(registry.address);
  StatusOr<std::string> system = util::ReadWholeFile(kSystemBundle);
  return (system.ok() ? system.value() + "\n" : std::string()) + ca.value();
}

struct Response {
  long status = 0;
  std::string www_authenticate;
  std::string error;  // transport failure, empty when an HTTP answer came
};

size_t OnHeader(char* buffer, size_t size, size_t n, void* user) {
  auto* response = static_cast<Response*>(user);
  std::string_view line(buffer, size * n);
  constexpr std::string_view kName = "www-authenticate:";
  if (line.size() > kName.size()) {
    std::string lower(line.substr(0, kName.size()));
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower == kName) {
      std::string value(line.substr(kName.size()));
      while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      response->www_authenticate = value;
    }
  }
  return size * n;
}

size_t Discard(char*, size_t size, size_t n, void*) {
  return size * n;
}

// One GET. `credentials` empty = anonymous. `bundle` empty = libcurl's default trust store.
Response Get(const config::Registry& registry, const std::string& bundle, const std::string& url,
             const config::Credentials* credentials, std::chrono::milliseconds timeout) {
  InitCurlOnce();
  Response response;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) {
    response.error = "cannot initialise libcurl";
    return response;
  }
  char error[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &response);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Discard);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_blob blob{};
  if (registry.insecure_skip_verify) {
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
  } else if (!bundle.empty()) {
    blob.data = const_cast<char*>(bundle.data());
    blob.len = bundle.size();
    blob.flags = CURL_BLOB_NOCOPY;  // `bundle` outlives the transfer
    curl_easy_setopt(curl, CURLOPT_CAINFO_BLOB, &blob);
  }
  if (credentials != nullptr && !credentials->empty()) {
    curl_easy_setopt(curl, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    curl_easy_setopt(curl, CURLOPT_USERNAME, credentials->username.c_str());
    curl_easy_setopt(curl, CURLOPT_PASSWORD, credentials->password.c_str());
  }
  CURLcode rc = curl_easy_perform(curl);
  if (rc != CURLE_OK) {
    response.error = error[0] != '\0' ? error : curl_easy_strerror(rc);
  } else {
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
  }
  curl_easy_cleanup(curl);
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
  char* escaped = curl_easy_escape(nullptr, service.c_str(), static_cast<int>(service.size()));
  std::string url = realm + (realm.find('?') == std::string::npos ? "?" : "&") +
                    "service=" + (escaped ? escaped : "");
  curl_free(escaped);
  return url;
}

}  // namespace

ProbeResult ProbeRegistry(const config::Registry& registry, bool check_credentials,
                          std::chrono::milliseconds timeout) {
  // The API root is at the host, whatever path the registry address carries.
  std::string root = registry.scheme + "://" + registry.host + "/v2/";
  if (registry.host == "docker.io") root = "https://registry-1.docker.io/v2/";
  StatusOr<std::string> bundle = TrustBundle(registry);
  if (!bundle.ok()) return {ProbeResult::State::kDown, bundle.status().message()};
  Response anonymous = Get(registry, *bundle, root, nullptr, timeout);
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
  Response with = Get(registry, *bundle, url, &registry.auth, timeout);
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
