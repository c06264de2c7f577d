// A Kubernetes API test server for one ConfigMap and the Secrets of its namespace, speaking what
// the shim uses of the real API (see FACTS.md, "Kubernetes API for the ConfigMap"): TLS, a
// bearer-token check (401 without or with a wrong token, 403 when told to forbid everything or
// one Secret, as RBAC with resourceNames does), GET of an object (404 when absent), watches of
// a collection with fieldSelector metadata.name=NAME streaming one JSON event per line from a
// resourceVersion (ADDED/MODIFIED/DELETED, ERROR with code 410 for a compacted
// resourceVersion), the watch ending after timeoutSeconds, streams that can be broken mid-way,
// and a count of every request. As in etcd, one resourceVersion counter serves every object, and
// a compaction expires old versions of all of them. Secret data is served base64, as the API
// does. No kube-apiserver can be installed here; this stands in for it.
//
// Built on cpp-httplib (TLS via OpenSSL); it serves on its own threads. Every public method is
// thread-safe. For tests only.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace httplib {
class SSLServer;
struct Request;
struct Response;
}  // namespace httplib

namespace shim::testing {

struct KubeApiServerOptions {
  std::string cert_path = {};  // server certificate (must cover 127.0.0.1)
  std::string key_path = {};
  std::string client_ca_path =
      {};  // "": token auth only; else a client certificate signed by it is
           // required on every connection (and then counts as authenticated)
  std::string token = "test-token-0123456789";
  std::string namespace_ = "kube-system";
  std::string name = "image-cri-shim";
  int port = 0;  // 0 = a free loopback port, bound (reserved) at construction and held until
                 // destruction, so no other process can take it, not even between Stop and Start
};

class KubeApiServer {
 public:
  explicit KubeApiServer(KubeApiServerOptions options);  // does not start
  ~KubeApiServer();                                      // Stop()
  KubeApiServer(const KubeApiServer&) = delete;
  KubeApiServer& operator=(const KubeApiServer&) = delete;

  // Listens on 127.0.0.1:port() (the same port after a Stop). Throws when it cannot bind.
  void Start();
  // Closes the listener and every open stream (abruptly): the API is down.
  void Stop();
  bool Running() const;

  int port() const { return options_.port; }
  std::string Url() const;  // "https://127.0.0.1:PORT"
  const std::string& token() const { return options_.token; }

  // Creates or updates the ConfigMap with `data` (a new resourceVersion; ADDED or MODIFIED goes
  // to the open watches). Returns the new resourceVersion.
  std::string SetData(const std::map<std::string, std::string>& data);
  void Delete();  // DELETED to the watches; GET answers 404 afterwards
  std::string ResourceVersion() const;

  // Creates or updates the Secret `name` of the namespace: `type` (e.g.
  // "kubernetes.io/dockerconfigjson") and `data` with raw values (served base64). Returns the
  // new resourceVersion.
  std::string SetSecret(const std::string& name, const std::string& type,
                        const std::map<std::string, std::string>& data);
  void DeleteSecret(const std::string& name);
  // true: GET and watch of that one Secret answer 403, as when the Role does not name it.
  void ForbidSecret(const std::string& name, bool forbidden = true);

  // 0: check the token as usual; 401 or 403: answer every request with it.
  void SetAuthFailure(int status);
  // Forgets the event history: a watch from a resourceVersion older than the latest gets ERROR
  // 410 (Gone).
  void Compact();
  // Breaks every open watch stream without a clean end (as a dropped connection does).
  void DropWatches();

  struct Counts {
    int total = 0;    // every request that reached a handler (failed auth included)
    int gets = 0;     // GET of a ConfigMap
    int watches = 0;  // watch requests of ConfigMaps
    int secret_gets = 0;
    int secret_watches = 0;
    int unauthorized = 0;  // 401 and 403 answers
  };
  Counts counts() const;
  std::vector<std::string> RequestLog() const;  // "GET /api/v1/...?...", in order
  int OpenWatches() const;
  // Waits until `n` watches are open (the shim is watching). false after `timeout`.
  bool WaitForOpenWatches(int n, std::chrono::milliseconds timeout) const;
  // Waits until counts().total >= n.
  bool WaitForRequests(int n, std::chrono::milliseconds timeout) const;
  // The Authorization headers seen (for checking what the client sent).
  std::vector<std::string> AuthorizationHeaders() const;

 private:
  using Key = std::pair<std::string, std::string>;  // (resource, name): ("secrets", "x")
  struct Object {
    std::string type;  // Secrets
    std::map<std::string, std::string> data;
    long long rv = 0;
  };
  struct Event {
    long long rv;
    Key key;
    std::string type;
    std::string object;  // JSON
  };

  void Handle(const httplib::Request& req, httplib::Response& res);
  void HandleWatch(const httplib::Request& req, httplib::Response& res,
                   const std::string& resource);
  bool Authorized(const httplib::Request& req, httplib::Response& res);  // REQUIRES: mutex_
  std::string ObjectJson(const Key& key, const Object& object) const;    // REQUIRES: mutex_
  std::string Set(const Key& key, const std::string& type,
                  const std::map<std::string, std::string>& data);            // EXCLUDES: mutex_
  void Remove(const Key& key);                                                // EXCLUDES: mutex_
  void Publish(const Key& key, const std::string& type, std::string object);  // REQUIRES: mutex_

  KubeApiServerOptions options_;
  int reserved_ = -1;  // bound, never listening: holds options_.port (when it was chosen here)
  std::unique_ptr<httplib::SSLServer> server_;
  std::thread thread_;

  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  long long next_rv_ = 1000;       // GUARDED_BY(mutex_)
  std::map<Key, Object> objects_;  // GUARDED_BY(mutex_)
  long long configmap_rv_ = 0;     // GUARDED_BY(mutex_): the ConfigMap's, also after Delete
  std::vector<std::string> forbidden_secrets_;  // GUARDED_BY(mutex_)
  std::vector<Event> events_;                   // GUARDED_BY(mutex_)
  long long compacted_rv_ = 0;                  // GUARDED_BY(mutex_): older watches get 410
  int auth_failure_ = 0;                        // GUARDED_BY(mutex_)
  int drop_generation_ = 0;                     // GUARDED_BY(mutex_)
  bool stopping_ = false;                       // GUARDED_BY(mutex_)
  int open_watches_ = 0;                        // GUARDED_BY(mutex_)
  Counts counts_;                               // GUARDED_BY(mutex_)
  std::vector<std::string> log_;                // GUARDED_BY(mutex_)
  std::vector<std::string> authorizations_;     // GUARDED_BY(mutex_)
};

// A kubeconfig for `server` with its CA inline (certificate-authority-data) and `token`; empty
// token = no token. Extra user fields (e.g. client-certificate) come as ready YAML lines.
std::string MakeKubeconfig(const std::string& server, const std::string& ca_pem,
                           const std::string& token, const std::string& extra_user_yaml = "");

std::string Base64(const std::string& data);

// A throwaway PKI in `dir` made with the openssl CLI: a CA, a server certificate for 127.0.0.1
// and localhost, and a client certificate (CN system:node:test). Works outside sandbox.sh: the
// shim gets the CA through certificate-authority-data, not the trust store.
struct TestPki {
  std::string ca_cert;
  std::string ca_key;
  std::string server_cert;
  std::string server_key;
  std::string client_cert;
  std::string client_key;
  std::string ca_pem;  // content of ca_cert
};
TestPki MakeTestPki(const std::string& dir);

}  // namespace shim::testing
