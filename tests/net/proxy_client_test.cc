// The daemon's HTTP clients behind a real CONNECT proxy (tests/support/connect_proxy.h): the
// Kubernetes API client and a registry probe tunnel through HTTPS_PROXY, the proxy's
// credentials go to the proxy only and the registry's to the registry only, TLS is still
// verified end to end, NO_PROXY (and a loopback address) bypasses the proxy, and a proxy's
// refusal is reported with the proxy and the target.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netdb.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string_view>
#include <thread>

#include "connect_proxy.h"
#include "kube/api_client.h"
#include "kube_api_server.h"
#include "registry/prober.h"
#include "temp_dir.h"
#include "test_util.h"

// Names under .test are known to the proxy only (its host map): here they do not resolve, at
// once, whatever the machine's resolver would do with them (no test depends on DNS).
extern "C" int getaddrinfo(const char* node, const char* service, const addrinfo* hints,
                           addrinfo** found) noexcept {
  using Real = int (*)(const char*, const char*, const addrinfo*, addrinfo**);
  static Real real = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "getaddrinfo"));
  if (node != nullptr && std::string_view(node).ends_with(".test")) return EAI_NONAME;
  return real(node, service, hints, found);
}

namespace shim::testing {
namespace {

using namespace std::chrono_literals;

constexpr char kConfigMapPath[] = "/api/v1/namespaces/kube-system/configmaps/image-cri-shim";

class BehindAProxy : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("proxy-pki");
    pki_ = new TestPki(MakeTestPki(dir_->path()));
  }
  static void TearDownTestSuite() {
    delete pki_;
    delete dir_;
  }
  void SetUp() override {
    server_ = std::make_unique<KubeApiServer>(
        KubeApiServerOptions{.cert_path = pki_->server_cert, .key_path = pki_->server_key});
    server_->Start();
    server_->SetData({{"registries.yaml", "x"}});
  }
  // The API server under a name only the proxy can resolve (its certificate names it).
  kube::Credentials Creds(const std::string& host) const {
    kube::Credentials c;
    c.source = "test";
    c.server = "https://" + host + ":" + std::to_string(server_->port());
    c.ca_data = pki_->ca_pem;
    c.token = server_->token();
    return c;
  }

  static TempDir* dir_;
  static TestPki* pki_;
  std::unique_ptr<KubeApiServer> server_;
  ConnectProxy proxy_{{{"kube-api.test", "127.0.0.1"}, {"registry.test", "127.0.0.1"}}};
};

// An error of a request that went direct: it names neither a proxy nor the proxy's port.
void ExpectNotAboutTheProxy(const std::string& error) {
  EXPECT_FALSE(error.empty());
  EXPECT_EQ(error.find("proxy"), std::string::npos) << error;
}

TempDir* BehindAProxy::dir_ = nullptr;
TestPki* BehindAProxy::pki_ = nullptr;

TEST_F(BehindAProxy, TheKubeApiClientTunnelsThroughHttpsProxy) {
  net::ProxyEnv env{.https_proxy =
                        "http://node%40corp:proxy%20pw@127.0.0.1:" + std::to_string(proxy_.port())};
  auto api = kube::MakeApiClient(Creds("kube-api.test"), {}, env);
  kube::Response got = api->Get(kConfigMapPath);
  EXPECT_EQ(got.status, 200) << got.error;
  std::vector<std::string> lines;
  kube::Response watched = api->Watch(
      "/api/v1/namespaces/kube-system/configmaps?fieldSelector=metadata.name%3D"
      "image-cri-shim&watch=1&resourceVersion=0&timeoutSeconds=1",
      10s, [&](std::string_view line) { lines.emplace_back(line); });
  EXPECT_EQ(watched.status, 200) << watched.error;
  EXPECT_FALSE(lines.empty());

  auto requests = proxy_.requests();
  ASSERT_EQ(requests.size(), 2u);
  for (const auto& r : requests) {
    EXPECT_EQ(r.method, "CONNECT");
    EXPECT_EQ(r.target, "kube-api.test:" + std::to_string(server_->port()));
    EXPECT_EQ(r.proxy_authorization, net::BasicAuthorization("node@corp", "proxy pw"));
  }
}

TEST_F(BehindAProxy, TlsIsStillVerifiedThroughTheTunnel) {
  net::ProxyEnv env{.https_proxy = proxy_.Url()};
  kube::Credentials c = Creds("kube-api.test");
  c.ca_data.clear();  // the system's store does not hold the test CA
  kube::Response got = kube::MakeApiClient(c, {}, env)->Get(kConfigMapPath);
  EXPECT_EQ(got.status, 0);
  EXPECT_NE(got.error.find("certificate"), std::string::npos) << got.error;
  EXPECT_EQ(proxy_.requests().size(), 1u);
  EXPECT_EQ(server_->counts().total, 0);
}

TEST_F(BehindAProxy, NoProxyAndLoopbackGoDirect) {
  std::string proxy = proxy_.Url();
  // Matched by NO_PROXY: the client goes direct, where the name (known only to the proxy) leads
  // nowhere. Whatever the resolver says of it (tests must not depend on DNS), the proxy saw
  // nothing and the error is not about the proxy.
  for (const std::string& no_proxy : std::vector<std::string>{
           ".test", "KUBE-API.test", "other.org, kube-api.test:" + std::to_string(server_->port()),
           "*"}) {
    net::ProxyEnv env{.https_proxy = proxy, .no_proxy = no_proxy};
    size_t before = proxy_.requests().size();
    kube::Response got = kube::MakeApiClient(Creds("kube-api.test"), {}, env)->Get(kConfigMapPath);
    EXPECT_EQ(got.status, 0) << no_proxy;
    EXPECT_EQ(proxy_.requests().size(), before) << no_proxy;
    ExpectNotAboutTheProxy(got.error);
  }
  // A port that does not match: proxied.
  net::ProxyEnv other_port{.https_proxy = proxy, .no_proxy = "kube-api.test:1"};
  EXPECT_EQ(kube::MakeApiClient(Creds("kube-api.test"), {}, other_port)->Get(kConfigMapPath).status,
            200);
  // Loopback is never proxied, whatever NO_PROXY says.
  net::ProxyEnv env{.https_proxy = proxy};
  EXPECT_EQ(kube::MakeApiClient(Creds("127.0.0.1"), {}, env)->Get(kConfigMapPath).status, 200);
  EXPECT_EQ(proxy_.requests().size(), 1u);
}

// A registry's `GET /v2/`: 401 with a Basic challenge, 200 with the right credentials. Records
// whether a Proxy-Authorization header ever reached it.
class TestRegistry {
 public:
  explicit TestRegistry(const TestPki& pki)
      : server_(pki.server_cert.c_str(), pki.server_key.c_str()) {
    server_.Get("/v2/", [this](const httplib::Request& request, httplib::Response& response) {
      if (request.has_header("Proxy-Authorization")) proxy_credentials_leaked_ = true;
      if (request.get_header_value("Authorization") == net::BasicAuthorization("user", "pw")) {
        response.status = 200;
      } else {
        response.status = 401;
        response.set_header("WWW-Authenticate", "Basic realm=\"test\"");
      }
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) throw std::runtime_error("TestRegistry: cannot listen on 127.0.0.1");
    thread_ = std::thread([this] {
      server_.listen_after_bind();
      loop_ended_ = true;
    });
    // httplib's stop() does nothing before the accept loop runs: wait for it, but not forever.
    if (!WaitUntil([this] { return server_.is_running() || loop_ended_; }, 10s, 5ms) ||
        !server_.is_running()) {
      if (loop_ended_) {
        thread_.join();
        throw std::runtime_error("TestRegistry: the accept loop failed to start");
      }
      // A thread that uses this object and cannot be stopped: no way to fail gracefully.
      std::fprintf(stderr, "TestRegistry: the accept loop did not start within 10 s\n");
      std::abort();
    }
  }
  ~TestRegistry() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  bool proxy_credentials_leaked() const { return proxy_credentials_leaked_; }

 private:
  httplib::SSLServer server_;
  int port_ = 0;
  std::thread thread_;
  std::atomic<bool> proxy_credentials_leaked_{false};
  std::atomic<bool> loop_ended_{false};
};

TEST_F(BehindAProxy, ARegistryProbeGoesWhereContainerdWouldGo) {
  TestRegistry registry(*pki_);
  config::Registry r;
  r.host = "registry.test:" + std::to_string(registry.port());
  r.address = "https://" + r.host;
  r.scheme = "https";
  r.ca_file = pki_->ca_cert;
  r.auth.username = "user";
  r.auth.password = "pw";
  std::string proxy = "http://proxyuser:proxypw@127.0.0.1:" + std::to_string(proxy_.port());
  net::ProxyEnv env{.https_proxy = proxy, .no_proxy = "localhost,10.0.0.0/8,.example.com"};

  registry::ProbeResult result = registry::ProbeRegistry(r, true, 5s, &env);
  EXPECT_EQ(result.state, registry::ProbeResult::State::kUp) << result.detail;
  auto requests = proxy_.requests();
  ASSERT_EQ(requests.size(), 2u);  // anonymous, then with the credentials
  for (const auto& request : requests) {
    EXPECT_EQ(request.target, r.host);
    EXPECT_EQ(request.proxy_authorization, net::BasicAuthorization("proxyuser", "proxypw"));
  }
  EXPECT_FALSE(registry.proxy_credentials_leaked());

  r.auth.password = "wrong";
  EXPECT_EQ(registry::ProbeRegistry(r, true, 5s, &env).state,
            registry::ProbeResult::State::kCredentialsRejected);

  // NO_PROXY names it: direct, where the name (known only to the proxy) leads nowhere; the proxy
  // saw nothing more, whatever the resolver says.
  net::ProxyEnv bypass{.https_proxy = proxy, .no_proxy = "registry.test"};
  ASSERT_EQ(proxy_.requests().size(), 4u);
  result = registry::ProbeRegistry(r, false, 5s, &bypass);
  EXPECT_EQ(result.state, registry::ProbeResult::State::kDown);
  EXPECT_EQ(proxy_.requests().size(), 4u);
  ExpectNotAboutTheProxy(result.detail);
}

TEST_F(BehindAProxy, AProxysRefusalNamesTheProxyAndTheTarget) {
  config::Registry r;
  r.host = "unknown.test:5000";  // the proxy cannot reach it: 502
  r.address = "https://" + r.host;
  r.scheme = "https";
  net::ProxyEnv env{.https_proxy =
                        "http://secret-user:secret-pw@127.0.0.1:" + std::to_string(proxy_.port())};
  registry::ProbeResult result = registry::ProbeRegistry(r, false, 5s, &env);
  EXPECT_EQ(result.state, registry::ProbeResult::State::kDown);
  EXPECT_NE(result.detail.find("proxy http://127.0.0.1:" + std::to_string(proxy_.port()) +
                               " (CONNECT unknown.test:5000) answered 502"),
            std::string::npos)
      << result.detail;
  EXPECT_EQ(result.detail.find("secret"), std::string::npos) << result.detail;

  net::ProxyEnv socks{.https_proxy = "socks5://127.0.0.1:1080"};
  result = registry::ProbeRegistry(r, false, 5s, &socks);
  EXPECT_NE(result.detail.find("only http:// proxies"), std::string::npos) << result.detail;
}

}  // namespace
}  // namespace shim::testing
