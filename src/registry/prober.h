// Registry probes over HTTPS (net/http_client.h): `GET /v2/` answers 200 or 401 from a live
// registry. Trust is the system's store plus the registry's `ca`; HTTPS_PROXY / NO_PROXY are
// honoured as containerd honours them, so a probe goes where a pull would go.
// With credentials, the probe also checks them (basic auth, or the registry's bearer-token
// realm), for --dry-run. Blocking: never call on the relay's loop thread.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "config/config.h"
#include "config/store.h"
#include "net/proxy.h"
#include "registry/health.h"

namespace shim::registry {

struct ProbeResult {
  enum class State { kUp, kDown, kCredentialsRejected };
  State state = State::kDown;
  std::string detail;  // why down or rejected; never contains a credential
};

// Thread-safe. The credentials, if asked to be checked, go only to this registry (and to the
// token service the registry itself names). `proxy`: nullptr = the process's environment.
ProbeResult ProbeRegistry(const config::Registry& registry, bool check_credentials,
                          std::chrono::milliseconds timeout = std::chrono::seconds(10),
                          const net::ProxyEnv* proxy = nullptr);

// The background prober: one thread that sleeps until a down registry is due, probes it, and
// marks it up or backs off. Registries no longer configured are forgotten.
class Prober {
 public:
  // How one registry is probed (the seam for tests); by default ProbeRegistry without a
  // credential check. Called on the prober's thread.
  using ProbeFunction = std::function<ProbeResult(const config::Registry&)>;

  Prober(RegistryHealth& health, const config::ConfigStore& store, ProbeFunction probe = {});
  ~Prober();
  void Start();
  void Stop();

 private:
  void Loop();

  RegistryHealth& health_;
  const config::ConfigStore& store_;
  ProbeFunction probe_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace shim::registry
