#include "net/http_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace shim::net {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

constexpr size_t kMaxProxyAnswer = 16 << 10;
// With several addresses, the least time one of them gets before the next is tried.
constexpr milliseconds kMinTimePerAddress{250};

// How this one call connects, and what went wrong on the way (for the message).
struct Plan {
  Url target;
  ProxyChoice proxy;
  milliseconds connect_timeout{0};
  CancelToken* cancel = nullptr;
  std::string error;             // set by Connect when it fails
  int verify_error = X509_V_OK;  // set by the TLS verify callback
  std::string verify_subject;    // the certificate it failed on
};

std::string Ms(milliseconds ms) {
  return std::to_string(ms.count()) + " ms";
}

// Waits until `fd` has `events` or the deadline passes. 0 = ready, ETIMEDOUT, or errno.
int WaitFor(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    auto left = duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return ETIMEDOUT;
    pollfd p{fd, events, 0};
    int n = poll(&p, 1, static_cast<int>(std::min<long long>(left, 60000)));
    if (n > 0) return 0;
    if (n < 0 && errno != EINTR) return errno;
  }
}

// A connected TCP socket to host:port (blocking mode, keepalive on), or -1 with plan.error set.
// `what` names the peer in messages ("registry-a.test:5000", "proxy http://p:3128").
// The addresses are tried in order and share the deadline, as libcurl and Go do: each gets at
// most the time left divided by the addresses left (at least kMinTimePerAddress), so a
// black-holed IPv6 route still leaves time for IPv4.
int ConnectTcp(Plan& plan, const std::string& host, int port, const std::string& what,
               Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0) {
    plan.error = "cannot resolve " + host + " (" + what +
                 "): " + (rc == EAI_SYSTEM ? std::strerror(errno) : gai_strerror(rc));
    return -1;
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owner(found, freeaddrinfo);
  std::string last = "no address";
  int left = 0;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) ++left;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next, --left) {
    char address[INET6_ADDRSTRLEN] = "?";
    const void* raw =
        a->ai_family == AF_INET
            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr)
            : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr);
    inet_ntop(a->ai_family, raw, address, sizeof address);
    int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      last = std::string("socket: ") + std::strerror(errno);
      continue;
    }
    if (plan.cancel != nullptr) plan.cancel->Attach(fd);
    auto now = Clock::now();
    auto share = std::max(kMinTimePerAddress, duration_cast<milliseconds>(deadline - now) / left);
    auto address_deadline = std::min(deadline, now + share);
    int err = 0;
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      err = errno;
      if (err == EINPROGRESS) {
        err = WaitFor(fd, POLLOUT, address_deadline);
        if (err == 0) {
          socklen_t len = sizeof err;
          if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        }
      }
    }
    if (err == 0 && plan.cancel != nullptr && plan.cancel->cancelled()) err = ECANCELED;
    if (err == 0) {
      int flags = fcntl(fd, F_GETFL);
      fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
      int one = 1;
      setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return fd;
    }
    close(fd);
    auto tried = duration_cast<milliseconds>(Clock::now() - now);
    last = err == ETIMEDOUT ? "timed out after " + Ms(tried) : std::string(std::strerror(err));
    last = std::string(address) + ": " + last;
    if (err == ECANCELED || Clock::now() >= deadline) break;  // the next one on time out too
  }
  plan.error = "cannot connect to " + what + " (" + last + ")";
  return -1;
}

bool SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

// Opens the tunnel: CONNECT host:port through the proxy on `fd`. The proxy's credentials go in
// this request only, never inside the tunnel.
bool OpenTunnel(Plan& plan, int fd, Clock::time_point deadline) {
  std::string target = plan.target.HostPort();
  std::string request =
      "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\nUser-Agent: image-cri-shim\r\n";
  if (!plan.proxy.authorization.empty()) {
    request += "Proxy-Authorization: " + plan.proxy.authorization + "\r\n";
  }
  request += "\r\n";
  std::string where = "proxy " + plan.proxy.display + " (CONNECT " + target + ")";
  if (!SendAll(fd, request)) {
    plan.error = "cannot send to " + where + ": " + std::strerror(errno);
    return false;
  }
  // Byte by byte up to the blank line: nothing of the tunnel may be read here.
  std::string answer;
  while (answer.size() < kMaxProxyAnswer &&
         (answer.size() < 4 || answer.compare(answer.size() - 4, 4, "\r\n\r\n") != 0)) {
    int err = WaitFor(fd, POLLIN, deadline);
    if (err != 0) {
      plan.error = where + ": " +
                   (err == ETIMEDOUT ? "no answer within " + Ms(plan.connect_timeout)
                                     : std::string(std::strerror(err)));
      return false;
    }
    char c;
    ssize_t n = recv(fd, &c, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      plan.error = where + ": connection closed before an answer";
      return false;
    }
    answer += c;
  }
  std::string status_line = answer.substr(0, answer.find("\r\n"));
  size_t space = status_line.find(' ');
  int status = space == std::string::npos ? 0 : std::atoi(status_line.c_str() + space + 1);
  if (status >= 200 && status < 300) return true;
  std::string reason = space == std::string::npos ? status_line : status_line.substr(space + 1);
  plan.error = where + " answered " + (reason.empty() ? "nothing usable" : reason);
  if (status == 407) {
    plan.error += plan.proxy.authorization.empty()
                      ? " (the proxy wants credentials: http://user:password@host:port)"
                      : " (the proxy refused the credentials in the proxy URL)";
  }
  return false;
}

// The connection as Go's transport makes it: direct, or through the proxy (a tunnel for https).
int Connect(Plan& plan) {
  auto deadline = Clock::now() + plan.connect_timeout;
  if (!plan.proxy.use) {
    return ConnectTcp(plan, plan.target.host, plan.target.port, plan.target.HostPort(), deadline);
  }
  int fd =
      ConnectTcp(plan, plan.proxy.host, plan.proxy.port, "proxy " + plan.proxy.display, deadline);
  if (fd < 0) return -1;
  if (plan.target.scheme == "https" && !OpenTunnel(plan, fd, deadline)) {
    close(fd);
    return -1;
  }
  return fd;
}

// cpp-httplib's clients, with the connection made by Connect (direct, proxy, tunnel) instead
// of their own: they then speak TLS (SSLClient) and HTTP/1.1 over it.
template <class Base>
class PlannedClient final : public Base {
 public:
  explicit PlannedClient(Plan* plan) : Base(plan->target.host, plan->target.port), plan_(plan) {}

 private:
  bool create_and_connect_socket(httplib::ClientImpl::Socket& socket,
                                 httplib::Error& error) override {
    if (!this->is_valid()) {
      plan_->error = "cannot set up TLS (OpenSSL context)";
      error = httplib::Error::Connection;
      return false;
    }
    int fd = Connect(*plan_);
    if (fd < 0) {
      error = httplib::Error::Connection;
      return false;
    }
    socket.sock = fd;
    return true;
  }

  Plan* plan_;
};

int VerifyCallback(int ok, X509_STORE_CTX* store) {
  if (ok) return ok;
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* plan = ssl ? static_cast<Plan*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl))) : nullptr;
  if (plan != nullptr && plan->verify_error == X509_V_OK) {
    plan->verify_error = X509_STORE_CTX_get_error(store);
    if (X509* cert = X509_STORE_CTX_get_current_cert(store)) {
      char name[256] = "";
      X509_NAME_oneline(X509_get_subject_name(cert), name, sizeof name);
      plan->verify_subject = name;
    }
  }
  return ok;
}

std::string OpensslReason() {
  unsigned long code = ERR_peek_last_error();
  if (code == 0) return "";
  const char* reason = ERR_reason_error_string(code);
  return reason != nullptr ? reason : "";
}

// Loads every PEM certificate of `pem`; how many.
int ForEachCertificate(const std::string& pem, const std::function<bool(X509*)>& use) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  int count = 0;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    ++count;
    if (!use(cert)) X509_free(cert);
  }
  ERR_clear_error();  // the end of the text reads as an error
  return count;
}

std::string Whose(const TlsOptions& tls) {
  return tls.what.empty() ? "" : " of " + tls.what;
}

// Trust, host name check and client certificate on the client's context. Empty or the error.
std::string SetUpTls(httplib::SSLClient& client, Plan& plan, const TlsOptions& tls) {
  // cpp-httplib's own check would add the system store to any CA given: ours is exact.
  client.enable_server_certificate_verification(false);
  SSL_CTX* ctx = client.ssl_context();
  if (ctx == nullptr) return "cannot set up TLS (OpenSSL context)";
  SSL_CTX_set_app_data(ctx, &plan);
  if (tls.verify) {
    if (tls.system_roots) SSL_CTX_set_default_verify_paths(ctx);
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    if (!tls.ca_pem.empty() && ForEachCertificate(tls.ca_pem, [store](X509* cert) {
                                 X509_STORE_add_cert(store, cert);
                                 return false;  // the store took its own reference
                               }) == 0) {
      return "the CA" + Whose(tls) + " holds no PEM certificate";
    }
    X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx);
    in6_addr ip{};
    bool is_ip = inet_pton(AF_INET, plan.target.host.c_str(), &ip) == 1 ||
                 inet_pton(AF_INET6, plan.target.host.c_str(), &ip) == 1;
    // As Go's crypto/tls (what kubelet and containerd verify with): only the subjectAltName
    // counts, never the subject's CN, and a wildcard is a whole left-most label ("*.example.com",
    // not "reg*.example.com").
    X509_VERIFY_PARAM_set_hostflags(
        param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
    if (is_ip) {
      X509_VERIFY_PARAM_set1_ip_asc(param, plan.target.host.c_str());
    } else {
      X509_VERIFY_PARAM_set1_host(param, plan.target.host.c_str(), 0);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, VerifyCallback);
  }
  if (!tls.client_cert_pem.empty() || !tls.client_key_pem.empty()) {
    if (tls.client_cert_pem.empty() || tls.client_key_pem.empty()) {
      return "a client certificate" + Whose(tls) + " needs both the certificate and its key";
    }
    bool first = true;
    bool failed = false;
    int count = ForEachCertificate(tls.client_cert_pem, [&](X509* cert) {
      if (first) {
        first = false;
        failed = SSL_CTX_use_certificate(ctx, cert) != 1;
        return false;
      }
      return SSL_CTX_add_extra_chain_cert(ctx, cert) == 1;  // takes it when it succeeds
    });
    if (count == 0 || failed) return "the client certificate" + Whose(tls) + " is not PEM";
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(
        BIO_new_mem_buf(tls.client_key_pem.data(), static_cast<int>(tls.client_key_pem.size())),
        BIO_free);
    EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
    bool used = key != nullptr && SSL_CTX_use_PrivateKey(ctx, key) == 1;
    EVP_PKEY_free(key);
    ERR_clear_error();
    if (!used) return "the client key" + Whose(tls) + " is not a PEM private key";
    if (SSL_CTX_check_private_key(ctx) != 1) {
      ERR_clear_error();
      return "the client certificate and key" + Whose(tls) + " do not belong together";
    }
  }
  return "";
}

// What went wrong, from cpp-httplib's error code and what Connect and OpenSSL recorded.
std::string Describe(httplib::Error error, const Plan& plan, const HttpRequest& request) {
  std::string host = plan.target.HostPort();
  std::string via = plan.proxy.use ? " through proxy " + plan.proxy.display : "";
  std::string tls = OpensslReason();
  switch (error) {
    case httplib::Error::Connection:
      return plan.error.empty() ? "cannot connect to " + host + via : plan.error;
    case httplib::Error::SSLConnection:
    case httplib::Error::SSLServerVerification:
      if (plan.verify_error != X509_V_OK) {
        return "TLS: the certificate of " + host +
               " is not trusted: " + X509_verify_cert_error_string(plan.verify_error) +
               (plan.verify_subject.empty() ? "" : " (" + plan.verify_subject + ")") +
               "; trust its CA or fix the host name";
      }
      return "TLS handshake with " + host + via + " failed" +
             (tls.empty() ? " (connection closed)" : ": " + tls);
    case httplib::Error::Read:
      return "no complete answer from " + host + via +
             (tls.empty() ? " (connection closed, or silent for " + Ms(request.read_timeout) + ")"
                          : ": " + tls);
    case httplib::Error::Write:
      return "cannot send the request to " + host + via + (tls.empty() ? "" : ": " + tls);
    default:
      return httplib::to_string(error) + " (" + host + via + ")";
  }
}

// What a URL that ParseUrl refused may show in a message: its scheme and host, never its
// userinfo (user:password@), path or query (tokens), nor control characters.
std::string SchemeAndHost(std::string_view url) {
  size_t sep = url.find("://");
  if (sep == std::string_view::npos) return "(no scheme://)";
  std::string_view authority = url.substr(sep + 3);
  authority = authority.substr(0, authority.find_first_of("/?#"));
  if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
    authority = authority.substr(at + 1);
  }
  std::string out = std::string(url.substr(0, sep)) + "://" + std::string(authority);
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return out;
}

// OpenSSL writes with write(), not send(MSG_NOSIGNAL): a close_notify sent on a socket the peer
// (or a Cancel) closed raises SIGPIPE, which would kill the daemon. Blocked on this thread for
// the call, and a SIGPIPE it raised is consumed before the mask is restored (as libcurl does).
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, &old_);
  }
  ~SigpipeGuard() {
    int saved_errno = errno;
    if (!was_pending_) {
      sigset_t pipe;
      sigemptyset(&pipe);
      sigaddset(&pipe, SIGPIPE);
      timespec zero{0, 0};
      // Until none is pending (EAGAIN); another signal's handler may interrupt it (EINTR): a
      // SIGPIPE left pending would be delivered, and kill, once the mask is restored.
      for (;;) {
        int got = sigtimedwait(&pipe, nullptr, &zero);
        if (got == SIGPIPE || (got < 0 && errno == EINTR)) continue;
        break;
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    errno = saved_errno;
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t old_;
  bool was_pending_ = false;
};

}  // namespace

CancelToken::~CancelToken() {
  Release();
}

void CancelToken::Cancel() {
  std::lock_guard lock(mutex_);
  cancelled_ = true;
  if (fd_ >= 0) shutdown(fd_, SHUT_RDWR);
}

bool CancelToken::cancelled() const {
  std::lock_guard lock(mutex_);
  return cancelled_;
}

void CancelToken::Attach(int fd) {
  std::lock_guard lock(mutex_);
  if (fd_ >= 0) close(fd_);
  fd_ = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (cancelled_ && fd_ >= 0) shutdown(fd_, SHUT_RDWR);
}

void CancelToken::Release() {
  std::lock_guard lock(mutex_);
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

HttpResponse HttpGet(const HttpRequest& request, const OnBody& on_body, CancelToken* cancel) {
  SigpipeGuard no_sigpipe;  // declared first: outlives the client and its TLS shutdown
  HttpResponse response;
  std::optional<Url> url = ParseUrl(request.url);
  if (!url) {
    response.error = "not an http(s) URL: " + SchemeAndHost(request.url);
    return response;
  }
  Plan plan;
  plan.target = *url;
  plan.proxy = ProxyFor(*url, request.proxy_env ? *request.proxy_env : ProcessProxyEnv());
  plan.connect_timeout = request.connect_timeout;
  plan.cancel = cancel;
  if (!plan.proxy.error.empty()) {
    response.error = plan.proxy.error;
    return response;
  }

  std::unique_ptr<httplib::ClientImpl> client;
  if (url->scheme == "https") {
    auto tls_client = std::make_unique<PlannedClient<httplib::SSLClient>>(&plan);
    std::string error = SetUpTls(*tls_client, plan, request.tls);
    if (!error.empty()) {
      response.error = error;
      return response;
    }
    client = std::move(tls_client);
  } else {
    client = std::make_unique<PlannedClient<httplib::ClientImpl>>(&plan);
  }
  auto seconds = [](milliseconds ms) { return std::max<long long>(1, (ms.count() + 999) / 1000); };
  client->set_connection_timeout(seconds(request.connect_timeout));  // the TLS handshake
  client->set_read_timeout(seconds(request.read_timeout));
  client->set_write_timeout(seconds(request.read_timeout));
  client->set_url_encode(false);  // URLs are built already encoded
  client->set_keep_alive(false);

  httplib::Headers headers;
  for (const auto& [name, value] : request.headers) headers.emplace(name, value);
  if (headers.find("User-Agent") == headers.end()) headers.emplace("User-Agent", "image-cri-shim");
  // cpp-httplib 0.11.4 writes an IPv6 host bare ("Host: fd00::1"): the header is ours, with the
  // brackets, and the port unless it is the scheme's default.
  if (headers.find("Host") == headers.end()) {
    bool v6 = url->host.find(':') != std::string::npos;
    std::string host = v6 ? "[" + url->host + "]" : url->host;
    if (url->port != (url->scheme == "https" ? 443 : 80)) host += ":" + std::to_string(url->port);
    headers.emplace("Host", host);
  }
  // Plain http through a proxy: the absolute URL, and the proxy's credentials for the proxy.
  std::string target = url->target;
  if (plan.proxy.use && url->scheme == "http") {
    target = "http://" + url->HostPort() + url->target;
    if (!plan.proxy.authorization.empty()) {
      headers.emplace("Proxy-Authorization", plan.proxy.authorization);
    }
  }

  auto deadline = request.total_timeout.count() > 0 ? Clock::now() + request.total_timeout
                                                    : Clock::time_point::max();
  ERR_clear_error();
  httplib::Result result = client->Get(
      target, headers,
      [&](const httplib::Response& head) {
        response.status = head.status;
        for (const auto& [name, value] : head.headers) {
          std::string lower = name;
          for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
          response.headers.emplace(lower, value);
        }
        return true;
      },
      [&](const char* data, size_t size) {
        if (Clock::now() > deadline) {
          response.timed_out = true;
          return false;
        }
        if (on_body && !on_body(response.status, std::string_view(data, size))) {
          response.stopped = true;
          return false;
        }
        return true;
      });
  if (cancel != nullptr) cancel->Release();
  if (cancel != nullptr && cancel->cancelled()) {
    response.cancelled = true;
    response.error = "cancelled";
    return response;
  }
  if (result) {
    response.status = result->status;
    return response;
  }
  if (response.timed_out) {
    response.error =
        "timed out after " + Ms(request.total_timeout) + " (" + plan.target.HostPort() + ")";
  } else if (response.stopped) {
    response.error = "stopped reading the answer";
  } else {
    response.error = Describe(result.error(), plan, request);
    if (result.error() != httplib::Error::Read && result.error() != httplib::Error::Write &&
        result.error() != httplib::Error::Canceled) {
      response.status = 0;  // no answer came
    }
  }
  return response;
}

}  // namespace shim::net
