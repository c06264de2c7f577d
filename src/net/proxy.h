// Which proxy a request goes through, decided the way Go's net/http does it
// (golang.org/x/net/http/httpproxy, used by containerd, kubelet and kubectl), so that a node
// behind a proxy reaches registries as containerd does and the API server as kubelet does:
// HTTPS_PROXY for https URLs, HTTP_PROXY for http URLs (upper case first, then lower case),
// NO_PROXY / no_proxy exceptions, and never a proxy for `localhost` or a loopback address.
//
// Pure functions and plain values: thread-safe. ProcessProxyEnv() reads the environment once,
// on first use, as Go's ProxyFromEnvironment does.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace shim::net {

// The three variables, as given (empty = unset).
struct ProxyEnv {
  std::string http_proxy = {};   // HTTP_PROXY, else http_proxy
  std::string https_proxy = {};  // HTTPS_PROXY, else https_proxy
  std::string no_proxy = {};     // NO_PROXY, else no_proxy

  static ProxyEnv FromEnvironment();
};

// The process's environment, read at the first call and kept (thread-safe).
const ProxyEnv& ProcessProxyEnv();

// An absolute http(s) URL split into its parts. `host` has no brackets (IPv6 literals are bare);
// `port` is the default of the scheme when the URL names none.
struct Url {
  std::string scheme;  // "http" or "https", lower case
  std::string host;
  int port = 0;
  std::string target;    // path and query, "/" when empty
  std::string userinfo;  // "user:password" as written (percent-encoded), usually empty

  std::string HostPort() const;  // "host:port", "[v6]:port"
};

// Parses an absolute http or https URL; nullopt when it is not one.
std::optional<Url> ParseUrl(std::string_view text);

// The proxy to use for a request, or none.
struct ProxyChoice {
  bool use = false;
  std::string host;  // the proxy's host and port (to connect to)
  int port = 0;
  std::string authorization;  // "Basic ..." from the proxy URL's user:password; secret
  std::string display;        // "http://host:port": for messages, never with credentials
  std::string error;          // the variable is set but unusable: the request must fail
};

// Whether a request to host:port goes through the proxy according to `no_proxy` alone (Go's
// useProxy): false for localhost and loopback IPs, and for a match of any comma-separated entry:
// `*`; an IP (with an optional port) equal to the host; a CIDR containing the host's IP (of the
// same family); a domain (`example.com` matches itself and its subdomains, `.example.com` and
// `*.example.com` only subdomains) with an optional port, matched as text against IP hosts too,
// as Go does. Case-insensitive; blank entries are ignored.
bool UseProxy(std::string_view host, int port, std::string_view no_proxy);

// "Basic base64(user:password)": an Authorization or Proxy-Authorization value; secret.
std::string BasicAuthorization(std::string_view user, std::string_view password);

// The proxy for `url` under `env`: the variable of its scheme, unless UseProxy says no.
ProxyChoice ProxyFor(const Url& url, const ProxyEnv& env);

}  // namespace shim::net
