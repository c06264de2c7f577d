// The proxy decision (net/proxy.h) against Go's golang.org/x/net/http/httpproxy, which
// containerd, kubelet and kubectl use: which variable serves which scheme, NO_PROXY entries as
// host, suffix with and without a leading dot, `*.`, IP, CIDR, with ports, `*`, case and blank
// entries, the loopback exception, and how proxy URLs are read.
#include <gtest/gtest.h>

#include "net/proxy.h"

namespace shim::net {
namespace {

bool Proxied(const std::string& url, const std::string& no_proxy) {
  std::optional<Url> parsed = ParseUrl(url);
  EXPECT_TRUE(parsed.has_value()) << url;
  if (!parsed) return false;
  ProxyEnv env{
      .http_proxy = "http://proxy:3128", .https_proxy = "http://proxy:3128", .no_proxy = no_proxy};
  return ProxyFor(*parsed, env).use;
}

TEST(ProxyFor, EachSchemeHasItsVariable) {
  ProxyEnv only_https{.https_proxy = "http://p:1"};
  EXPECT_TRUE(ProxyFor(*ParseUrl("https://registry.example.com"), only_https).use);
  EXPECT_FALSE(ProxyFor(*ParseUrl("http://registry.example.com"), only_https).use);
  ProxyEnv only_http{.http_proxy = "http://p:1"};
  EXPECT_FALSE(ProxyFor(*ParseUrl("https://registry.example.com"), only_http).use);
  EXPECT_TRUE(ProxyFor(*ParseUrl("http://registry.example.com"), only_http).use);
  EXPECT_FALSE(ProxyFor(*ParseUrl("https://registry.example.com"), ProxyEnv{}).use);
}

TEST(ProxyFor, LocalhostAndLoopbackAreNeverProxied) {
  EXPECT_FALSE(Proxied("https://localhost:5000/v2/", ""));
  EXPECT_FALSE(Proxied("https://127.0.0.1/v2/", ""));
  EXPECT_FALSE(Proxied("https://127.8.9.10/v2/", ""));
  EXPECT_FALSE(Proxied("https://[::1]:6443/", ""));
  EXPECT_TRUE(Proxied("https://10.0.0.1/", ""));
  EXPECT_TRUE(Proxied("https://localhost.example.com/", ""));
}

TEST(NoProxy, HostAndDomainSuffixes) {
  // A name matches itself and its subdomains, with or without a leading dot or `*.`...
  EXPECT_FALSE(Proxied("https://example.com/", "example.com"));
  EXPECT_FALSE(Proxied("https://registry.example.com/", "example.com"));
  EXPECT_FALSE(Proxied("https://a.b.example.com/", "example.com"));
  // ...but a leading dot or `*.` leaves the name itself proxied.
  EXPECT_TRUE(Proxied("https://example.com/", ".example.com"));
  EXPECT_FALSE(Proxied("https://registry.example.com/", ".example.com"));
  EXPECT_TRUE(Proxied("https://example.com/", "*.example.com"));
  EXPECT_FALSE(Proxied("https://registry.example.com/", "*.example.com"));
  // Suffixes are whole labels.
  EXPECT_TRUE(Proxied("https://badexample.com/", "example.com"));
  EXPECT_TRUE(Proxied("https://example.com.evil.org/", "example.com"));
}

TEST(NoProxy, PortsCaseBlanksAndStar) {
  EXPECT_FALSE(Proxied("https://registry.example.com:5000/", "registry.example.com:5000"));
  EXPECT_TRUE(Proxied("https://registry.example.com:5001/", "registry.example.com:5000"));
  EXPECT_FALSE(Proxied("https://registry.example.com/", "example.com:443"));  // default port
  EXPECT_TRUE(Proxied("http://registry.example.com/", "example.com:443"));
  EXPECT_FALSE(Proxied("https://Registry.Example.COM/", "EXAMPLE.com"));
  EXPECT_FALSE(Proxied("https://registry.example.com/", " , ,other.org , example.com ,"));
  EXPECT_TRUE(Proxied("https://registry.example.com/", ",,  ,"));
  EXPECT_FALSE(Proxied("https://anything.at.all:1234/", "*"));
  EXPECT_FALSE(Proxied("https://10.1.2.3/", "other.org,*"));
  EXPECT_TRUE(Proxied("https://registry.example.com/", ":443"));  // no host: ignored
}

TEST(NoProxy, AddressesAndRanges) {
  EXPECT_FALSE(Proxied("https://10.96.0.1/", "10.96.0.1"));
  EXPECT_TRUE(Proxied("https://10.96.0.2/", "10.96.0.1"));
  EXPECT_FALSE(Proxied("https://10.96.0.1:6443/", "10.96.0.1:6443"));
  EXPECT_TRUE(Proxied("https://10.96.0.1:443/", "10.96.0.1:6443"));
  EXPECT_FALSE(Proxied("https://10.96.12.7/", "10.96.0.0/12"));
  EXPECT_TRUE(Proxied("https://10.112.0.1/", "10.96.0.0/12"));
  EXPECT_FALSE(Proxied("https://192.168.1.1/", "0.0.0.0/0"));
  EXPECT_FALSE(Proxied("https://[fd00::5]:5000/", "fd00::/8"));
  EXPECT_TRUE(Proxied("https://[fe80::5]:5000/", "fd00::/8"));
  // A range holds addresses of its own family only, as Go's IPNet.Contains: ::/0 is every IPv6
  // address and no IPv4 one (IPv4-mapped ranges are IPv4).
  EXPECT_TRUE(Proxied("https://10.1.2.3/", "::/0"));
  EXPECT_TRUE(Proxied("https://10.1.2.3/", "::/8"));
  EXPECT_FALSE(Proxied("https://[fd00::5]/", "::/0"));
  EXPECT_TRUE(Proxied("https://[fd00::5]/", "0.0.0.0/0"));
  EXPECT_FALSE(Proxied("https://10.1.2.3/", "::ffff:10.0.0.0/104"));
  EXPECT_FALSE(Proxied("https://[fd00::5]:5000/", "[fd00::5]:5000"));
  EXPECT_FALSE(Proxied("https://[fd00::5]/", "fd00::5"));
  // Domain entries match an address as text, as Go's httpproxy matches them (its domain
  // matcher runs for IP hosts too): "0.0.1" is a suffix of whole labels of 10.0.0.1, "0.1" of
  // 10.0.0.1 but not of 10.0.0.11. Ranges never match a name.
  EXPECT_FALSE(Proxied("https://10.0.0.1/", "0.0.1"));
  EXPECT_FALSE(Proxied("https://10.0.0.1/", ".0.1"));
  EXPECT_TRUE(Proxied("https://10.0.0.11/", "0.1"));
  EXPECT_TRUE(Proxied("https://registry.example.com/", "10.0.0.0/8"));
}

TEST(ProxyFor, ProxyUrlsAreReadAsGoReadsThem) {
  Url target = *ParseUrl("https://registry.example.com/v2/");
  ProxyChoice plain = ProxyFor(target, {.https_proxy = "proxy.corp:3128"});  // no scheme: http
  EXPECT_TRUE(plain.use);
  EXPECT_EQ(plain.host, "proxy.corp");
  EXPECT_EQ(plain.port, 3128);
  EXPECT_EQ(plain.error, "");
  ProxyChoice default_port = ProxyFor(target, {.https_proxy = "http://proxy.corp"});
  EXPECT_EQ(default_port.port, 80);
  ProxyChoice with_user = ProxyFor(target, {.https_proxy = "http://us%40er:p%3Ass@proxy:8080"});
  EXPECT_EQ(with_user.authorization, "Basic " + std::string("dXNAZXI6cDpzcw=="));  // us@er:p:ss
  EXPECT_EQ(with_user.display, "http://proxy:8080");  // never the credentials
  ProxyChoice socks = ProxyFor(target, {.https_proxy = "socks5://proxy:1080"});
  EXPECT_TRUE(socks.use);
  EXPECT_NE(socks.error.find("socks5"), std::string::npos) << socks.error;
  ProxyChoice tls_proxy = ProxyFor(target, {.https_proxy = "https://proxy:443"});
  EXPECT_NE(tls_proxy.error.find("only http://"), std::string::npos) << tls_proxy.error;
}

TEST(ProxyEnv, UpperCaseFirstThenLowerCase) {
  setenv("HTTPS_PROXY", "http://upper:1", 1);
  setenv("https_proxy", "http://lower:1", 1);
  setenv("no_proxy", "lower.example", 1);
  unsetenv("NO_PROXY");
  unsetenv("HTTP_PROXY");
  setenv("http_proxy", "", 1);
  ProxyEnv env = ProxyEnv::FromEnvironment();
  EXPECT_EQ(env.https_proxy, "http://upper:1");
  EXPECT_EQ(env.no_proxy, "lower.example");
  EXPECT_EQ(env.http_proxy, "");
  unsetenv("HTTPS_PROXY");
  unsetenv("https_proxy");
  unsetenv("no_proxy");
  unsetenv("http_proxy");
}

TEST(ParseUrl, PartsDefaultsAndRejects) {
  std::optional<Url> url = ParseUrl("HTTPS://User:pw@[fd00::1]:6443/api?watch=1#x");
  ASSERT_TRUE(url);
  EXPECT_EQ(url->scheme, "https");
  EXPECT_EQ(url->host, "fd00::1");
  EXPECT_EQ(url->port, 6443);
  EXPECT_EQ(url->target, "/api?watch=1");
  EXPECT_EQ(url->userinfo, "User:pw");
  EXPECT_EQ(url->HostPort(), "[fd00::1]:6443");
  EXPECT_EQ(ParseUrl("http://h")->port, 80);
  EXPECT_EQ(ParseUrl("http://h")->target, "/");
  EXPECT_FALSE(ParseUrl("ftp://h/"));
  EXPECT_FALSE(ParseUrl("https://h:99999/"));
  EXPECT_FALSE(ParseUrl("https:///x"));
  EXPECT_FALSE(ParseUrl("https://h/a b"));
  EXPECT_FALSE(ParseUrl("https://h/a\r\nX-Injected: 1"));
}

}  // namespace
}  // namespace shim::net
