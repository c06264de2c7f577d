#include "net/proxy.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace shim::net {
namespace {

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view TrimSpace(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  return text;
}

int DefaultPort(std::string_view scheme) {
  return scheme == "https" ? 443 : scheme == "http" ? 80 : 0;
}

std::optional<int> ParsePort(std::string_view text) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  int port = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    port = port * 10 + (c - '0');
  }
  if (port == 0 || port > 65535) return std::nullopt;
  return port;
}

// An IP as 16 bytes (IPv4 mapped into IPv6, as Go's net.IP holds it).
using Ip = std::array<unsigned char, 16>;

std::optional<Ip> ParseIp(std::string_view text) {
  std::string s(text);
  Ip ip{};
  in_addr v4{};
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    ip[10] = 0xff;
    ip[11] = 0xff;
    std::memcpy(ip.data() + 12, &v4, 4);
    return ip;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, s.c_str(), &v6) == 1) {
    std::memcpy(ip.data(), &v6, 16);
    return ip;
  }
  return std::nullopt;
}

bool IsV4(const Ip& ip) {
  static constexpr unsigned char kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(ip.data(), kPrefix, 12) == 0;
}

bool IsLoopback(const Ip& ip) {
  if (IsV4(ip)) return ip[12] == 127;
  Ip one{};
  one[15] = 1;
  return ip == one;
}

// `bits` leading bits of a and b are equal.
bool SamePrefix(const Ip& a, const Ip& b, int bits) {
  for (int i = 0; i < 16 && bits > 0; ++i, bits -= 8) {
    unsigned mask = bits >= 8 ? 0xffu : (0xffu << (8 - bits)) & 0xffu;
    if ((a[i] & mask) != (b[i] & mask)) return false;
  }
  return true;
}

struct Cidr {
  Ip ip;
  int bits;  // over the 16 bytes (IPv4 prefixes count from bit 96)
  bool v4;   // the network is IPv4 (also when written as ::ffff:a.b.c.d/n)
};

std::optional<Cidr> ParseCidr(std::string_view text) {
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  std::optional<Ip> ip = ParseIp(text.substr(0, slash));
  std::string_view length = text.substr(slash + 1);
  if (!ip || length.empty() || length.size() > 3) return std::nullopt;
  int bits = 0;
  for (char c : length) {
    if (c < '0' || c > '9') return std::nullopt;
    bits = bits * 10 + (c - '0');
  }
  bool v4 = text.substr(0, slash).find(':') == std::string_view::npos;
  if (bits > (v4 ? 32 : 128)) return std::nullopt;
  // Go's IPNet.Contains compares the lengths of the network and of the IP (4 or 16 bytes,
  // IPv4-mapped addresses counting as IPv4): an IPv6 range never contains an IPv4 host.
  return Cidr{*ip, v4 ? bits + 96 : bits, IsV4(*ip)};
}

// Go's net.SplitHostPort, enough for NO_PROXY entries: "host:port", "[v6]:port". False when
// there is no port part (then the whole entry is the host).
bool SplitHostPort(std::string_view entry, std::string_view* host, std::string_view* port) {
  if (!entry.empty() && entry.front() == '[') {
    size_t close = entry.find(']');
    if (close == std::string_view::npos || close + 1 >= entry.size() || entry[close + 1] != ':') {
      return false;
    }
    *host = entry.substr(0, close + 1);
    *port = entry.substr(close + 2);
    return true;
  }
  size_t colon = entry.rfind(':');
  if (colon == std::string_view::npos || entry.find(':') != colon) return false;  // v6 or none
  *host = entry.substr(0, colon);
  *port = entry.substr(colon + 1);
  return true;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string PercentDecode(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && HexValue(text[i + 1]) >= 0 &&
        HexValue(text[i + 2]) >= 0) {
      out += static_cast<char>(HexValue(text[i + 1]) * 16 + HexValue(text[i + 2]));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

std::string Base64(std::string_view data) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < data.size(); i += 3) {
    unsigned v = (static_cast<unsigned char>(data[i]) << 16) |
                 (static_cast<unsigned char>(data[i + 1]) << 8) |
                 static_cast<unsigned char>(data[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i + 1 == data.size()) {
    unsigned v = static_cast<unsigned char>(data[i]) << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == data.size()) {
    unsigned v = (static_cast<unsigned char>(data[i]) << 16) |
                 (static_cast<unsigned char>(data[i + 1]) << 8);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

const char* Getenv(const char* upper, const char* lower) {
  const char* value = std::getenv(upper);
  if (value != nullptr && *value != '\0') return value;
  value = std::getenv(lower);
  return value != nullptr ? value : "";
}

}  // namespace

ProxyEnv ProxyEnv::FromEnvironment() {
  return ProxyEnv{.http_proxy = Getenv("HTTP_PROXY", "http_proxy"),
                  .https_proxy = Getenv("HTTPS_PROXY", "https_proxy"),
                  .no_proxy = Getenv("NO_PROXY", "no_proxy")};
}

const ProxyEnv& ProcessProxyEnv() {
  static const ProxyEnv* env = new ProxyEnv(ProxyEnv::FromEnvironment());  // never destroyed
  return *env;
}

std::string Url::HostPort() const {
  bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::optional<Url> ParseUrl(std::string_view text) {
  for (char c : text) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return std::nullopt;  // no raw
  }                                                                               // spaces
  size_t sep = text.find("://");
  if (sep == std::string_view::npos) return std::nullopt;
  Url url;
  url.scheme = Lower(text.substr(0, sep));
  if (url.scheme != "http" && url.scheme != "https") return std::nullopt;
  std::string_view rest = text.substr(sep + 3);
  size_t path_at = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, path_at);
  std::string_view target = path_at == std::string_view::npos ? "" : rest.substr(path_at);
  if (size_t hash = target.find('#'); hash != std::string_view::npos)
    target = target.substr(0, hash);
  url.target = target.empty()          ? "/"
               : target.front() == '?' ? "/" + std::string(target)
                                       : std::string(target);
  if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
    url.userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
  }
  std::string_view host = authority;
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return std::nullopt;
      port = after.substr(1);
    }
  } else if (size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) return std::nullopt;
  url.host = Lower(host);
  if (port.empty()) {
    url.port = DefaultPort(url.scheme);
  } else {
    std::optional<int> number = ParsePort(port);
    if (!number) return std::nullopt;
    url.port = *number;
  }
  return url;
}

bool UseProxy(std::string_view host_in, int port_number, std::string_view no_proxy) {
  std::string host = Lower(TrimSpace(host_in));
  if (host == "localhost") return false;
  std::optional<Ip> ip = ParseIp(host);
  if (ip && IsLoopback(*ip)) return false;
  std::string port = std::to_string(port_number);

  size_t start = 0;
  while (start <= no_proxy.size()) {
    size_t comma = no_proxy.find(',', start);
    if (comma == std::string_view::npos) comma = no_proxy.size();
    std::string entry = Lower(TrimSpace(no_proxy.substr(start, comma - start)));
    start = comma + 1;
    if (entry.empty()) continue;
    if (entry == "*") return false;
    if (std::optional<Cidr> cidr = ParseCidr(entry)) {
      if (ip && IsV4(*ip) == cidr->v4 && SamePrefix(cidr->ip, *ip, cidr->bits)) return false;
      continue;
    }
    std::string_view entry_host = entry;
    std::string_view entry_port;
    if (SplitHostPort(entry, &entry_host, &entry_port)) {
      if (entry_host.empty()) continue;  // ":80": malformed, ignored as Go does
      if (entry_host.front() == '[' && entry_host.back() == ']') {
        entry_host = entry_host.substr(1, entry_host.size() - 2);
      }
    }
    bool port_ok = entry_port.empty() || entry_port == port;
    if (std::optional<Ip> entry_ip = ParseIp(entry_host)) {
      if (ip && *ip == *entry_ip && port_ok) return false;
      continue;
    }
    // A domain entry is matched as text against any host, an IP too, as Go's httpproxy does
    // ("0.0.1" bypasses 10.0.0.1: a suffix of whole labels).
    if (entry_host.empty()) continue;
    std::string suffix(entry_host);
    if (suffix.rfind("*.", 0) == 0) suffix.erase(0, 1);
    bool match_host = suffix.front() != '.';
    if (match_host) suffix.insert(0, ".");
    bool matches = (host.size() >= suffix.size() &&
                    host.compare(host.size() - suffix.size(), suffix.size(), suffix) == 0) ||
                   (match_host && host == std::string_view(suffix).substr(1));
    if (matches && port_ok) return false;
  }
  return true;
}

std::string BasicAuthorization(std::string_view user, std::string_view password) {
  return "Basic " + Base64(std::string(user) + ":" + std::string(password));
}

ProxyChoice ProxyFor(const Url& url, const ProxyEnv& env) {
  ProxyChoice choice;
  const std::string& value = url.scheme == "https" ? env.https_proxy : env.http_proxy;
  const char* variable = url.scheme == "https" ? "HTTPS_PROXY" : "HTTP_PROXY";
  if (value.empty() || !UseProxy(url.host, url.port, env.no_proxy)) return choice;
  choice.use = true;
  // As Go does: a value without a scheme ("proxy:3128") is read as http://.
  std::optional<Url> proxy = ParseUrl(value);
  if (!proxy && value.find("://") == std::string::npos) proxy = ParseUrl("http://" + value);
  if (!proxy) {
    std::string scheme = value.find("://") != std::string::npos
                             ? Lower(std::string_view(value).substr(0, value.find("://")))
                             : "";
    choice.error = scheme.empty() || scheme == "http" || scheme == "https"
                       ? std::string(variable) + " is not a valid proxy URL"
                       : std::string(variable) + " names a " + scheme +
                             " proxy; only http:// proxies are supported";
    return choice;
  }
  if (proxy->scheme != "http") {
    choice.error = std::string(variable) + " names an https:// proxy (TLS to the proxy itself); " +
                   "only http:// proxies are supported";
    return choice;
  }
  choice.host = proxy->host;
  choice.port = proxy->port;
  choice.display = "http://" + proxy->HostPort();
  if (!proxy->userinfo.empty()) {
    size_t colon = proxy->userinfo.find(':');
    std::string user = PercentDecode(std::string_view(proxy->userinfo).substr(0, colon));
    std::string password =
        colon == std::string::npos ? "" : PercentDecode(proxy->userinfo.substr(colon + 1));
    choice.authorization = BasicAuthorization(user, password);
  }
  return choice;
}

}  // namespace shim::net
