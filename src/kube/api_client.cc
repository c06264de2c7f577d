#include "kube/api_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <deque>
#include <map>
#include <mutex>

#include "util/file.h"

namespace shim::kube {
namespace {

using namespace std::chrono_literals;

constexpr size_t kMaxBody = 8 << 20;  // a ConfigMap is at most 1 MiB; more is not an answer
constexpr auto kGetTimeout = 30s;
constexpr auto kConnectTimeout = 10s;

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string Trim(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.pop_back();
  }
  return text;
}

struct Transfer {
  ApiClient::RequestId id = 0;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  std::string url;
  std::string authorization;
  bool watch = false;
  std::string body;
  std::string pending;            // watch: bytes after the last newline
  std::deque<std::string> lines;  // watch: complete lines not yet given to on_line
  ApiClient::OnLine on_line;
  ApiClient::OnDone done;
  bool too_big = false;
  bool finished = false;  // libcurl is done with it (or it never started)
  CURLcode result = CURLE_OK;
  std::string start_error;  // could not even start (a credential file could not be read)
  char error_text[CURL_ERROR_SIZE] = {};

  long Status() const {
    long code = 0;
    if (easy != nullptr) curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
    return code;
  }
};

// libcurl's write callback: only buffers. Lines are handed out later, outside libcurl, so that
// their consumers may start or cancel requests.
size_t OnData(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * count;
  if (t->watch && t->Status() == 200) {
    t->pending.append(data, n);
    size_t start = 0;
    for (size_t nl; (nl = t->pending.find('\n', start)) != std::string::npos; start = nl + 1) {
      std::string_view line(t->pending.data() + start, nl - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (!line.empty()) t->lines.emplace_back(line);
    }
    t->pending.erase(0, start);
    if (t->pending.size() > kMaxBody) {
      t->too_big = true;
      return 0;
    }
    return n;
  }
  if (t->body.size() + n > kMaxBody) {
    t->too_big = true;
    return 0;
  }
  t->body.append(data, n);
  return n;
}

class CurlApiClient final : public ApiClient {
 public:
  CurlApiClient(Credentials credentials, WaitHooks hooks)
      : credentials_(std::move(credentials)), hooks_(std::move(hooks)) {
    GlobalInit();
    multi_ = curl_multi_init();
  }
  ~CurlApiClient() override {
    while (!transfers_.empty()) Cancel(transfers_.begin()->first);
    curl_multi_cleanup(multi_);
  }

  RequestId StartGet(const std::string& path, OnDone done) override {
    return Start(path, kGetTimeout, nullptr, std::move(done));
  }

  RequestId StartWatch(const std::string& path, std::chrono::milliseconds timeout, OnLine on_line,
                       OnDone done) override {
    if (!on_line) on_line = [](std::string_view) {};
    return Start(path, timeout, std::move(on_line), std::move(done));
  }

  void Cancel(RequestId id) override {
    auto it = transfers_.find(id);
    if (it == transfers_.end()) return;
    Destroy(*it->second);
    transfers_.erase(it);
  }

  size_t InFlight() const override { return transfers_.size(); }

  void Poll(std::chrono::milliseconds max_wait, const std::vector<int>& fds) override {
    if (Drive()) return;
    std::vector<curl_waitfd> extra;
    for (int fd : fds) {
      if (fd >= 0) extra.push_back(curl_waitfd{fd, CURL_WAIT_POLLIN, 0});
    }
    long wait_ms = std::clamp<long>(static_cast<long>(max_wait.count()), 0, 60000);
    curl_multi_poll(multi_, extra.data(), static_cast<unsigned>(extra.size()),
                    static_cast<int>(wait_ms), nullptr);
    Drive();
  }

  bool Await(RequestId id) override {
    while (transfers_.count(id) != 0) {
      long wait_ms = 1000;
      if (hooks_.max_wait) {
        wait_ms = std::clamp<long>(static_cast<long>(hooks_.max_wait().count()), 0, 1000);
      }
      Poll(std::chrono::milliseconds(wait_ms), hooks_.fds);
      if (transfers_.count(id) == 0) return true;
      if (hooks_.on_wake && !hooks_.on_wake()) {
        Cancel(id);
        return false;
      }
    }
    return true;
  }

 private:
  // What a request authenticates and verifies with: the PEM texts, whether given inline or in
  // files. Empty = not set.
  struct Secrets {
    std::string token;
    std::string ca;
    std::string cert;
    std::string key;
  };

  // `data` if set, else the content of `file` if set. The error names the file, the system's
  // reason and which credential it is, never the content.
  bool Pem(const std::string& data, const std::string& file, const char* what, std::string* out,
           std::string* error) const {
    if (!data.empty() || file.empty()) {
      *out = data;
      return true;
    }
    StatusOr<std::string> text = util::ReadWholeFile(file);
    if (!text.ok()) {
      *error = text.status().message() + " (the " + what +
               (credentials_.source.empty() ? "" : " of " + credentials_.source) +
               "); fix the file or its permissions";
      return false;
    }
    *out = std::move(text).value();
    return true;
  }

  // Files are read again on every request: kubelet rotates projected service account tokens
  // (and their ca.crt). Reading them here, not in libcurl, reports an unreadable one with its
  // reason instead of as a vague TLS failure.
  bool ReadSecrets(Secrets* out, std::string* error) const {
    if (!Pem(credentials_.token, credentials_.token_file, "bearer token file", &out->token,
             error)) {
      return false;
    }
    if (credentials_.token.empty()) out->token = Trim(std::move(out->token));  // file's newline
    return Pem(credentials_.ca_data, credentials_.ca_file, "CA file", &out->ca, error) &&
           Pem(credentials_.client_cert_data, credentials_.client_cert_file,
               "client certificate file", &out->cert, error) &&
           Pem(credentials_.client_key_data, credentials_.client_key_file, "client key file",
               &out->key, error);
  }

  static curl_blob Blob(const std::string& data) {
    return curl_blob{const_cast<char*>(data.data()), data.size(), CURL_BLOB_COPY};
  }

  RequestId Start(const std::string& path, std::chrono::milliseconds timeout, OnLine on_line,
                  OnDone done) {
    auto owned = std::make_unique<Transfer>();
    Transfer& t = *owned;
    t.id = next_id_++;
    t.watch = static_cast<bool>(on_line);
    t.on_line = std::move(on_line);
    t.done = std::move(done);
    Secrets secrets;
    if (!ReadSecrets(&secrets, &t.start_error)) {
      t.finished = true;  // reported by the next Poll, never from inside this call
      transfers_.emplace(t.id, std::move(owned));
      return next_id_ - 1;
    }
    t.easy = curl_easy_init();
    t.url = credentials_.server + path;
    curl_easy_setopt(t.easy, CURLOPT_URL, t.url.c_str());
    curl_easy_setopt(t.easy, CURLOPT_PRIVATE, &t);
    curl_easy_setopt(t.easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(t.easy, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(t.easy, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(std::chrono::milliseconds(kConnectTimeout).count()));
    curl_easy_setopt(t.easy, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
    curl_easy_setopt(t.easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(t.easy, CURLOPT_WRITEFUNCTION, OnData);
    curl_easy_setopt(t.easy, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(t.easy, CURLOPT_USERAGENT, "image-cri-shim");
    curl_easy_setopt(t.easy, CURLOPT_ERRORBUFFER, t.error_text);

    t.headers = curl_slist_append(nullptr, "Accept: application/json");
    if (!secrets.token.empty()) {
      t.authorization = "Authorization: Bearer " + secrets.token;
      t.headers = curl_slist_append(t.headers, t.authorization.c_str());
    }
    curl_easy_setopt(t.easy, CURLOPT_HTTPHEADER, t.headers);

    if (credentials_.insecure_skip_tls_verify) {
      curl_easy_setopt(t.easy, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_easy_setopt(t.easy, CURLOPT_SSL_VERIFYHOST, 0L);
    } else {
      curl_easy_setopt(t.easy, CURLOPT_SSL_VERIFYPEER, 1L);
      curl_easy_setopt(t.easy, CURLOPT_SSL_VERIFYHOST, 2L);
    }
    // CURL_BLOB_COPY: libcurl keeps its own copies, `secrets` may go.
    curl_blob ca = Blob(secrets.ca);
    if (!secrets.ca.empty()) curl_easy_setopt(t.easy, CURLOPT_CAINFO_BLOB, &ca);
    curl_blob cert = Blob(secrets.cert);
    if (!secrets.cert.empty()) {
      curl_easy_setopt(t.easy, CURLOPT_SSLCERT_BLOB, &cert);
      curl_easy_setopt(t.easy, CURLOPT_SSLCERTTYPE, "PEM");
    }
    curl_blob key = Blob(secrets.key);
    if (!secrets.key.empty()) {
      curl_easy_setopt(t.easy, CURLOPT_SSLKEY_BLOB, &key);
      curl_easy_setopt(t.easy, CURLOPT_SSLKEYTYPE, "PEM");
    }
    curl_multi_add_handle(multi_, t.easy);
    RequestId id = t.id;
    transfers_.emplace(id, std::move(owned));
    return id;
  }

  void Destroy(Transfer& t) {
    if (t.easy != nullptr) {
      curl_multi_remove_handle(multi_, t.easy);
      curl_easy_cleanup(t.easy);
      t.easy = nullptr;
    }
    curl_slist_free_all(t.headers);
    t.headers = nullptr;
  }

  // Lets libcurl move every transfer on, then hands out lines and completions. True when any
  // callback ran.
  bool Drive() {
    int running = 0;
    CURLMcode mc = curl_multi_perform(multi_, &running);
    int queued = 0;
    while (CURLMsg* message = curl_multi_info_read(multi_, &queued)) {
      if (message->msg != CURLMSG_DONE) continue;
      Transfer* t = nullptr;
      curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, &t);
      if (t != nullptr) {
        t->finished = true;
        t->result = message->data.result;
      }
    }
    bool ran = false;
    std::vector<RequestId> ids;
    ids.reserve(transfers_.size());
    for (const auto& [id, t] : transfers_) ids.push_back(id);
    for (RequestId id : ids) {
      // Each callback may cancel any request, this one included: look it up again every time.
      for (auto it = transfers_.find(id); it != transfers_.end() && !it->second->lines.empty();
           it = transfers_.find(id)) {
        std::string line = std::move(it->second->lines.front());
        it->second->lines.pop_front();
        ran = true;
        it->second->on_line(line);
      }
    }
    for (RequestId id : ids) {
      auto it = transfers_.find(id);
      if (it == transfers_.end()) continue;
      Transfer& t = *it->second;
      if (!t.finished && mc == CURLM_OK) continue;
      Response response;
      if (!t.start_error.empty()) {
        response.error = t.start_error;
      } else if (!t.finished) {
        response.error = curl_multi_strerror(mc);
      } else {
        response.status = static_cast<int>(t.Status());
        if (t.result != CURLE_OK) {
          // curl's own text: host, port and reason, never a header (so never the token).
          response.error = t.too_big              ? "answer larger than 8 MiB"
                           : t.error_text[0] != 0 ? t.error_text
                                                  : curl_easy_strerror(t.result);
          if (!t.watch) response.status = 0;  // a GET without a whole body has no answer
        }
      }
      response.body = std::move(t.body);
      OnDone done = std::move(t.done);
      Destroy(t);
      transfers_.erase(it);
      ran = true;
      if (done) done(std::move(response));
    }
    return ran;
  }

  Credentials credentials_;
  WaitHooks hooks_;
  CURLM* multi_ = nullptr;
  RequestId next_id_ = 1;
  std::map<RequestId, std::unique_ptr<Transfer>> transfers_;
};

}  // namespace

Response ApiClient::Get(const std::string& path) {
  Response out;
  RequestId id = StartGet(path, [&out](Response r) { out = std::move(r); });
  if (!Await(id)) out.aborted = true;
  return out;
}

Response ApiClient::Watch(const std::string& path, std::chrono::milliseconds timeout,
                          const std::function<void(std::string_view)>& on_line) {
  Response out;
  RequestId id = StartWatch(path, timeout, on_line, [&out](Response r) { out = std::move(r); });
  if (!Await(id)) {
    out = Response{};
    out.aborted = true;
  }
  return out;
}

std::unique_ptr<ApiClient> MakeApiClient(Credentials credentials, WaitHooks hooks) {
  return std::make_unique<CurlApiClient>(std::move(credentials), std::move(hooks));
}

}  // namespace shim::kube
