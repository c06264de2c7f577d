#include "memory_scenarios.h"

#include <chrono>
#include <stdexcept>
#include <thread>

#include "bench_client.h"
#include "kube_api_server.h"
#include "shim_process.h"
#include "temp_dir.h"
#include "test_util.h"

namespace shim::bench {

using namespace shim::testing;

ConfigMapIdle MeasureIdleWatchingConfigMap(const std::string& shim_binary,
                                           const std::string& runtime_socket,
                                           const std::string& registry_address,
                                           const std::string& registry_auth, int settle_ms) {
  TempDir dir("bench-configmap");
  TestPki pki = MakeTestPki(dir.MakeDir("pki"));
  const std::string token = "bench-token-0123456789abcdef";
  KubeApiServer api({.cert_path = pki.server_cert, .key_path = pki.server_key, .token = token});
  api.Start();
  // The local file names the registry without its credentials; the ConfigMap brings them, as
  // a cluster-wide setting would.
  ConfigMapIdle result;
  result.payload_note = "the registry with its credentials";
  api.SetData({{"registries.yaml", "sealos:\n  address: " + registry_address + "\n  auth: \"" +
                                       registry_auth + "\"\n"}});
  WriteFile(dir.File("kubeconfig"), MakeKubeconfig(api.Url(), pki.ca_pem, token), 0600);
  std::string socket = dir.File("shim.sock");
  std::string config = dir.File("shim.yaml");
  WriteFile(config,
            "shim: " + socket + "\ncri: " + runtime_socket + "\nstateDir: " + dir.File("state") +
                "\naddress: " + registry_address +
                "\nmetricsAddress: 127.0.0.1:" + std::to_string(FreeLoopbackPort()) + "\n",
            0600);
  ShimProcess shim({.config_path = config,
                    .socket_path = socket,
                    .env = {{"KUBECONFIG", dir.File("kubeconfig")}, {"HOME", dir.path()}},
                    .binary = shim_binary});
  shim.Start();
  if (!api.WaitForOpenWatches(1, std::chrono::seconds(10))) {
    throw std::runtime_error("the shim did not watch its ConfigMap within 10 s:\n" +
                             TailLines(shim.Log()));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(settle_ms));
  if (shim.Log().find("config reloaded source=configmap") == std::string::npos) {
    throw std::runtime_error("the shim did not take the registry from its ConfigMap:\n" +
                             TailLines(shim.Log()));
  }
  result.memory = ReadProcessMemory(shim.pid());
  ExitStatus stopped = shim.Stop();
  if (!stopped.Success()) {
    throw std::runtime_error("the ConfigMap shim did not stop cleanly: " + stopped.ToString());
  }
  return result;
}

BurstMemory MeasureBursts(pid_t shim_pid, const std::string& shim_socket, const std::string& image,
                          int bursts, int connections, int calls, int idle_ms) {
  BurstMemory result;
  result.connections = connections;
  result.calls = calls;
  result.idle_ms = idle_ms;
  result.before = RssKiB(shim_pid);
  {
    BenchFlood client(shim_socket, connections, calls, image);
    for (int i = 0; i < bursts; ++i) {
      BenchFlood::Result outcome = client.Run();
      if (outcome.ok != calls) {
        throw std::runtime_error(
            "flood " + std::to_string(i + 1) + ": " + std::to_string(calls - outcome.ok) + " of " +
            std::to_string(calls) + " calls failed, first " + outcome.first_error);
      }
      result.took_ms.push_back(outcome.took_ms);
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      result.after.push_back(RssKiB(shim_pid));
    }
  }  // the flood's connections close, as clients that are done do
  std::this_thread::sleep_for(std::chrono::milliseconds(idle_ms));
  result.after_idle = RssKiB(shim_pid);
  result.idle_memory = ReadProcessMemory(shim_pid);
  return result;
}

}  // namespace shim::bench
