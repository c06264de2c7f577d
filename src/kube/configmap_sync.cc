#include "kube/configmap_sync.h"

namespace shim::kube {

ConfigMapSync::ConfigMapSync(ApiClient& api, SyncOptions options, Callbacks callbacks)
    : options_(options),
      callbacks_(std::move(callbacks)),
      watch_(api, "configmaps", std::move(options),
             ObjectWatch::Callbacks{
                 .on_object = [this](const ObjectState& object) { OnObject(object); },
                 .on_state = [this](SyncState s, const std::string& d) { OnState(s, d); }}) {}

void ConfigMapSync::OnState(SyncState state, const std::string& detail) {
  // The watch reports the object; whether the key is in it is this class's business.
  if (state == SyncState::kSynced) {
    const std::optional<ObjectState>& object = watch_.object();
    if (!object || object->data.count(options_.key) == 0) state = SyncState::kKeyAbsent;
  }
  state_ = state;
  if (callbacks_.on_state) callbacks_.on_state(state, detail);
}

void ConfigMapSync::OnObject(const ObjectState& object) {
  std::optional<std::string> payload;
  if (auto it = object.data.find(options_.key); object.exists && it != object.data.end()) {
    payload = it->second;
  }
  if (delivered_ && payload == last_payload_) return;  // another key changed
  delivered_ = true;
  last_payload_ = payload;
  if (callbacks_.on_payload) callbacks_.on_payload(payload);
}

ReadOnce ReadConfigMapOnce(ApiClient& api, const SyncOptions& options) {
  ReadOnce out;
  ConfigMapSync sync(api, options,
                     {.on_payload = [&](const std::optional<std::string>& p) { out.payload = p; },
                      .on_state =
                          [&](SyncState state, const std::string& detail) {
                            out.state = state;
                            out.detail = detail;
                          }});
  sync.Step();  // a fresh sync's first step is the read
  return out;
}

}  // namespace shim::kube
