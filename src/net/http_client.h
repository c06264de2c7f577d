// One blocking HTTP GET over cpp-httplib's client, for the Kubernetes API client and the
// registry probes: TLS verified by OpenSSL against the trust asked for (the system store, a CA
// given as PEM, or both), the host name checked, an optional client certificate, a proxy chosen
// as Go's net/http chooses it (net/proxy.h; CONNECT for https, absolute-form for http), and
// errors that say what failed and where, never with a credential.
//
// Thread-safe: every call has its own connection. A CancelToken lets another thread abort a
// call in flight (the socket is shut down, the call returns at once).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "net/proxy.h"

namespace shim::net {

struct TlsOptions {
  bool verify = true;           // false: no check of the server at all (insecureSkipVerify)
  bool system_roots = true;     // trust the system's store (OpenSSL's default paths)
  std::string ca_pem;           // also trusted (one or more PEM certificates); may be empty
  std::string client_cert_pem;  // with client_key_pem: presented to the server
  std::string client_key_pem;   // secret
  std::string what = "";        // whose credentials, for messages ("kubeconfig /x")
};

struct HttpRequest {
  std::string url;                                           // absolute http:// or https:// URL
  std::vector<std::pair<std::string, std::string>> headers;  // e.g. Authorization (secret)
  TlsOptions tls;
  std::chrono::milliseconds connect_timeout = std::chrono::seconds(10);    // TCP, proxy and TLS
  std::chrono::milliseconds read_timeout = std::chrono::seconds(30);       // each read
  std::chrono::milliseconds total_timeout = std::chrono::milliseconds(0);  // 0: none; checked
                                                                           // as data arrives
  const ProxyEnv* proxy_env = nullptr;  // nullptr: ProcessProxyEnv()
};

struct HttpResponse {
  int status = 0;                                   // 0 when no answer came
  std::multimap<std::string, std::string> headers;  // names lower case
  std::string error;       // what failed, when the exchange did not complete; never a secret
  bool cancelled = false;  // CancelToken::Cancel ended it
  bool stopped = false;    // OnBody returned false
  bool timed_out = false;  // total_timeout passed
};

// Aborts a call in flight from another thread. One token per call.
class CancelToken {
 public:
  CancelToken() = default;
  ~CancelToken();
  CancelToken(const CancelToken&) = delete;
  CancelToken& operator=(const CancelToken&) = delete;

  void Cancel();  // thread-safe; the call returns soon with cancelled = true
  bool cancelled() const;

  // For the call itself: the socket now in use (a private duplicate is kept, so the shutdown
  // can never hit a descriptor number reused elsewhere), and its release.
  void Attach(int fd);
  void Release();

 private:
  mutable std::mutex mutex_;
  int fd_ = -1;             // GUARDED_BY(mutex_)
  bool cancelled_ = false;  // GUARDED_BY(mutex_)
};

// Body bytes as they arrive (chunked encoding already removed), with the answer's status.
// Return false to stop reading: the call returns with `stopped` set and the status kept.
using OnBody = std::function<bool(int status, std::string_view data)>;

// GET `request.url`. `on_body` may be empty (the body is discarded). Blocking.
HttpResponse HttpGet(const HttpRequest& request, const OnBody& on_body,
                     CancelToken* cancel = nullptr);

}  // namespace shim::net
