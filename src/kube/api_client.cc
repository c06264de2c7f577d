#include "kube/api_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <fstream>
#include <mutex>
#include <sstream>

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
  CURL* easy = nullptr;
  std::string body;
  std::string pending;  // watch: bytes after the last newline
  const std::function<void(std::string_view)>* on_line = nullptr;
  bool too_big = false;

  long Status() const {
    long code = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
    return code;
  }
};

size_t OnData(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * count;
  if (t->on_line != nullptr && t->Status() == 200) {
    t->pending.append(data, n);
    size_t start = 0;
    for (size_t nl; (nl = t->pending.find('\n', start)) != std::string::npos; start = nl + 1) {
      std::string_view line(t->pending.data() + start, nl - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (!line.empty()) (*t->on_line)(line);
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
  ~CurlApiClient() override { curl_multi_cleanup(multi_); }

  Response Get(const std::string& path) override { return Perform(path, kGetTimeout, nullptr); }

  Response Watch(const std::string& path, std::chrono::milliseconds timeout,
                 const std::function<void(std::string_view)>& on_line) override {
    return Perform(path, timeout, &on_line);
  }

 private:
  // The token is read again on every request: kubelet rotates projected service account tokens.
  std::string Token(std::string* error) const {
    if (!credentials_.token.empty()) return credentials_.token;
    if (credentials_.token_file.empty()) return "";
    std::ifstream in(credentials_.token_file);
    if (!in) {
      *error = "cannot read the token file " + credentials_.token_file;
      return "";
    }
    std::ostringstream text;
    text << in.rdbuf();
    return Trim(text.str());
  }

  static curl_blob Blob(const std::string& data) {
    return curl_blob{const_cast<char*>(data.data()), data.size(), CURL_BLOB_COPY};
  }

  Response Perform(const std::string& path, std::chrono::milliseconds timeout,
                   const std::function<void(std::string_view)>* on_line) {
    Response response;
    std::string token_error;
    std::string token = Token(&token_error);
    if (!token_error.empty()) {
      response.error = token_error;
      return response;
    }
    Transfer t;
    t.easy = curl_easy_init();
    t.on_line = on_line;
    std::string url = credentials_.server + path;
    curl_easy_setopt(t.easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(t.easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(t.easy, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(t.easy, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(std::chrono::milliseconds(kConnectTimeout).count()));
    curl_easy_setopt(t.easy, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
    curl_easy_setopt(t.easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(t.easy, CURLOPT_WRITEFUNCTION, OnData);
    curl_easy_setopt(t.easy, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(t.easy, CURLOPT_USERAGENT, "image-cri-shim");
    char error_text[CURL_ERROR_SIZE] = {};
    curl_easy_setopt(t.easy, CURLOPT_ERRORBUFFER, error_text);

    curl_slist* headers = curl_slist_append(nullptr, "Accept: application/json");
    std::string authorization;
    if (!token.empty()) {
      authorization = "Authorization: Bearer " + token;
      headers = curl_slist_append(headers, authorization.c_str());
    }
    curl_easy_setopt(t.easy, CURLOPT_HTTPHEADER, headers);

    if (credentials_.insecure_skip_tls_verify) {
      curl_easy_setopt(t.easy, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_easy_setopt(t.easy, CURLOPT_SSL_VERIFYHOST, 0L);
    } else {
      curl_easy_setopt(t.easy, CURLOPT_SSL_VERIFYPEER, 1L);
      curl_easy_setopt(t.easy, CURLOPT_SSL_VERIFYHOST, 2L);
    }
    curl_blob ca = Blob(credentials_.ca_data);
    if (!credentials_.ca_data.empty()) {
      curl_easy_setopt(t.easy, CURLOPT_CAINFO_BLOB, &ca);
    } else if (!credentials_.ca_file.empty()) {
      curl_easy_setopt(t.easy, CURLOPT_CAINFO, credentials_.ca_file.c_str());
    }
    curl_blob cert = Blob(credentials_.client_cert_data);
    curl_blob key = Blob(credentials_.client_key_data);
    if (!credentials_.client_cert_data.empty()) {
      curl_easy_setopt(t.easy, CURLOPT_SSLCERT_BLOB, &cert);
      curl_easy_setopt(t.easy, CURLOPT_SSLCERTTYPE, "PEM");
    } else if (!credentials_.client_cert_file.empty()) {
      curl_easy_setopt(t.easy, CURLOPT_SSLCERT, credentials_.client_cert_file.c_str());
    }
    if (!credentials_.client_key_data.empty()) {
      curl_easy_setopt(t.easy, CURLOPT_SSLKEY_BLOB, &key);
      curl_easy_setopt(t.easy, CURLOPT_SSLKEYTYPE, "PEM");
    } else if (!credentials_.client_key_file.empty()) {
      curl_easy_setopt(t.easy, CURLOPT_SSLKEY, credentials_.client_key_file.c_str());
    }

    curl_multi_add_handle(multi_, t.easy);
    CURLcode result = CURLE_OK;
    bool done = false;
    while (!done) {
      int running = 0;
      CURLMcode mc = curl_multi_perform(multi_, &running);
      if (mc != CURLM_OK) {
        response.error = curl_multi_strerror(mc);
        break;
      }
      int queued = 0;
      while (CURLMsg* message = curl_multi_info_read(multi_, &queued)) {
        if (message->msg == CURLMSG_DONE && message->easy_handle == t.easy) {
          result = message->data.result;
          done = true;
        }
      }
      if (done) break;
      std::vector<curl_waitfd> extra;
      for (int fd : hooks_.fds) extra.push_back(curl_waitfd{fd, CURL_WAIT_POLLIN, 0});
      long wait_ms = 1000;
      if (hooks_.max_wait) {
        wait_ms = std::clamp<long>(static_cast<long>(hooks_.max_wait().count()), 0, 1000);
      }
      curl_multi_poll(multi_, extra.data(), static_cast<unsigned>(extra.size()),
                      static_cast<int>(wait_ms), nullptr);
      if (hooks_.on_wake && !hooks_.on_wake()) {
        response.aborted = true;
        break;
      }
    }
    response.status = static_cast<int>(t.Status());
    if (!response.aborted && result != CURLE_OK) {
      // curl's own text: host, port and reason, never a header (so never the token).
      response.error = t.too_big            ? "answer larger than 8 MiB"
                       : error_text[0] != 0 ? error_text
                                            : curl_easy_strerror(result);
      if (on_line == nullptr) response.status = 0;  // a GET without a whole body has no answer
    }
    response.body = std::move(t.body);
    curl_multi_remove_handle(multi_, t.easy);
    curl_easy_cleanup(t.easy);
    curl_slist_free_all(headers);
    return response;
  }

  Credentials credentials_;
  WaitHooks hooks_;
  CURLM* multi_ = nullptr;
};

}  // namespace

std::unique_ptr<ApiClient> MakeApiClient(Credentials credentials, WaitHooks hooks) {
  return std::make_unique<CurlApiClient>(std::move(credentials), std::move(hooks));
}

}  // namespace shim::kube
