// Where the shim finds its Kubernetes API credentials, and what they are: the service account of
// a pod, or a kubeconfig file. Parsing and discovery are pure apart from reading files; no shared
// state, callable from any thread (the shim calls them from its configuration thread and from
// --dry-run). Secrets (tokens, keys) live only in Credentials and never appear in Describe() or
// in any error message.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "util/status.h"

namespace shim::kube {

struct Credentials {
  std::string source;   // "in-cluster service account", "kubeconfig /etc/kubernetes/admin.conf"
  std::string context;  // the kubeconfig context used ("" in a pod)
  std::string server;   // "https://10.0.0.1:6443", no trailing slash

  // TLS: the server's CA (file or PEM data; neither = the system trust store).
  std::string ca_file;
  std::string ca_data;
  bool insecure_skip_tls_verify = false;

  // Authentication, any of: a bearer token (inline or read from a file on every request, since
  // service account tokens rotate), a client certificate and key (files or PEM data).
  std::string token;
  std::string token_file;
  std::string client_cert_file;
  std::string client_cert_data;
  std::string client_key_file;
  std::string client_key_data;

  // "kubeconfig /root/.kube/config (context admin@k, server https://10.0.0.1:6443, auth bearer
  // token)": what was found, never the secret itself.
  std::string Describe() const;
};

// Parses a kubeconfig (YAML) and picks the current context's cluster and user. Relative file
// paths inside it are relative to `path`'s directory, as kubectl reads them. Errors name `path`
// and the entry; a user with an exec or auth-provider plugin is reported as unsupported.
StatusOr<Credentials> ParseKubeconfig(const std::string& text, const std::string& path);

// The places discovery looks, overridable so tests need not touch the machine's files.
struct DiscoveryEnv {
  std::function<std::optional<std::string>(const std::string&)> getenv;  // default ::getenv
  std::string service_account_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
  std::vector<std::string> node_kubeconfigs = {"/etc/kubernetes/admin.conf",
                                               "/etc/kubernetes/kubelet.conf"};
  static DiscoveryEnv System();
};

struct Discovery {
  std::optional<Credentials> credentials;  // nullopt when nothing usable was found
  // One line per place looked at, in order, with what was found or why it was skipped (for
  // --dry-run and for the one log line when nothing is found). No secrets.
  std::vector<std::string> tried;
};

// In order: in a pod (KUBERNETES_SERVICE_HOST/_PORT and the service account token), then
// $KUBECONFIG (its first existing file when it lists several), /etc/kubernetes/admin.conf,
// /etc/kubernetes/kubelet.conf, then ~/.kube/config. The first usable place wins; one that
// exists but cannot be used (bad YAML, no server, a plugin) is reported in `tried` and skipped.
Discovery DiscoverCredentials(const DiscoveryEnv& env = DiscoveryEnv::System());

// Standard base64 (padding optional), for the *-data fields of a kubeconfig.
std::optional<std::string> DecodeBase64(std::string_view text);

}  // namespace shim::kube
