// What the shim keeps between restarts under `stateDir` (default /var/lib/image-cri-shim): the
// last ConfigMap input that was applied (its payload and the Secrets it named), so that a
// restart while the API server is unreachable serves the last synced ConfigMap merged with the
// current local file. The directory is 0700 and the file 0600 (it holds registry passwords),
// written atomically, never through a symbolic link. Blocking file I/O: call it from the
// configuration thread or at start, never from the relay's event loop. No shared state.
#pragma once

#include <optional>
#include <string>

#include "config/inputs.h"
#include "util/status.h"

namespace shim::config {

// The file's name inside the state directory.
inline constexpr const char* kConfigMapStateFile = "configmap.yaml";

// Writes `input` to `state_dir`, creating the directory (0700) if it is missing.
Status SaveConfigMapState(const std::string& state_dir, const ConfigMapInput& input);

// The input last saved: nullopt when nothing was saved (or it was cleared). An unreadable or
// damaged file is an error naming it; the caller goes on without it.
StatusOr<std::optional<ConfigMapInput>> LoadConfigMapState(const std::string& state_dir);

// The input saved for the ConfigMap `settings` name: nullopt when nothing was saved, or it was
// saved for another ConfigMap (a changed configMap key).
StatusOr<std::optional<ConfigMapInput>> LoadConfigMapStateFor(const std::string& state_dir,
                                                              const KubeSync& settings);

// Removes what was saved (the ConfigMap was deleted: it no longer applies). Missing is fine.
Status ClearConfigMapState(const std::string& state_dir);

}  // namespace shim::config
