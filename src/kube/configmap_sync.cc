#include "kube/configmap_sync.h"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace shim::kube {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

// A watch that ends cleanly sooner than this without any event is treated as a failure, so a
// server that closes watches at once cannot turn the loop into polling.
constexpr double kShortWatchFraction = 0.1;

std::string UrlEncode(std::string_view text) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// What matters of one ConfigMap object.
struct ObjectView {
  std::string resource_version;
  std::optional<std::string> value;  // data[key]
};

std::optional<ObjectView> View(const Json& object, const std::string& key) {
  if (!object.is_object()) return std::nullopt;
  ObjectView view;
  auto metadata = object.find("metadata");
  if (metadata != object.end() && metadata->is_object()) {
    auto rv = metadata->find("resourceVersion");
    if (rv != metadata->end() && rv->is_string()) view.resource_version = rv->get<std::string>();
  }
  auto data = object.find("data");
  if (data != object.end() && data->is_object()) {
    auto value = data->find(key);
    if (value != data->end() && value->is_string()) view.value = value->get<std::string>();
  }
  return view;
}

// The first line of a Status answer's message, for logs ("configmaps \"x\" is forbidden: ...").
std::string StatusMessage(const std::string& body) {
  Json status = Json::parse(body, nullptr, false);
  if (status.is_object() && status.contains("message") && status["message"].is_string()) {
    return status["message"].get<std::string>();
  }
  return body.substr(0, std::min<size_t>(body.size(), 200));
}

}  // namespace

const char* SyncStateName(SyncState state) {
  switch (state) {
    case SyncState::kStarting:
      return "starting";
    case SyncState::kSynced:
      return "synced";
    case SyncState::kKeyAbsent:
      return "key-absent";
    case SyncState::kAbsent:
      return "configmap-absent";
    case SyncState::kUnauthorized:
      return "unauthorized";
    case SyncState::kUnreachable:
      return "unreachable";
    case SyncState::kError:
      return "error";
  }
  return "unknown";
}

SyncOptions SyncOptions::Scaled(double factor) const {
  auto scale = [factor](std::chrono::milliseconds d) {
    return std::max(1ms, std::chrono::milliseconds(static_cast<long long>(d.count() * factor)));
  };
  SyncOptions out = *this;
  out.watch_timeout = scale(watch_timeout);
  out.backoff_initial = scale(backoff_initial);
  out.backoff_max = scale(backoff_max);
  return out;
}

ConfigMapSync::ConfigMapSync(ApiClient& api, SyncOptions options, Callbacks callbacks)
    : api_(api),
      options_(std::move(options)),
      callbacks_(std::move(callbacks)),
      random_(std::random_device{}()) {}

std::chrono::milliseconds ConfigMapSync::Step() {
  return need_list_ ? List() : Watch();
}

void ConfigMapSync::Deliver(const std::optional<std::string>& payload) {
  if (delivered_ && payload == last_payload_) return;
  delivered_ = true;
  last_payload_ = payload;
  if (callbacks_.on_payload) callbacks_.on_payload(payload);
}

void ConfigMapSync::SetState(SyncState state, const std::string& detail) {
  state_ = state;
  if (callbacks_.on_state) callbacks_.on_state(state, detail);
}

std::chrono::milliseconds ConfigMapSync::Jitter(std::chrono::milliseconds base, double spread) {
  std::uniform_real_distribution<double> factor(1.0 - spread, 1.0 + spread);
  return std::chrono::milliseconds(static_cast<long long>(base.count() * factor(random_)));
}

std::chrono::milliseconds ConfigMapSync::Backoff() {
  backoff_ = backoff_.count() == 0 ? options_.backoff_initial
                                   : std::min(backoff_ * 2, options_.backoff_max);
  return Jitter(backoff_, 0.2);
}

std::chrono::milliseconds ConfigMapSync::List() {
  std::string path = "/api/v1/namespaces/" + UrlEncode(options_.namespace_) + "/configmaps/" +
                     UrlEncode(options_.name);
  Response response = api_.Get(path);
  if (response.aborted) return 0ms;
  if (response.status == 200) {
    Json object = Json::parse(response.body, nullptr, false);
    std::optional<ObjectView> view = View(object, options_.key);
    if (!view) {
      SetState(SyncState::kError, "the answer to GET " + path + " is not a ConfigMap object");
      return Backoff();
    }
    resource_version_ = view->resource_version;
    need_list_ = false;
    backoff_ = 0ms;
    SetState(view->value ? SyncState::kSynced : SyncState::kKeyAbsent,
             "resourceVersion " + resource_version_);
    Deliver(view->value);
    return 0ms;
  }
  if (response.status == 404) {
    // Watching without a resourceVersion starts with the current state, so a ConfigMap created
    // later arrives as ADDED without any polling.
    resource_version_.clear();
    need_list_ = false;
    backoff_ = 0ms;
    SetState(SyncState::kAbsent, "GET " + path + ": 404 Not Found");
    Deliver(std::nullopt);
    return 0ms;
  }
  if (response.status == 401 || response.status == 403) {
    SetState(SyncState::kUnauthorized, "GET " + path + ": HTTP " + std::to_string(response.status) +
                                           ": " + StatusMessage(response.body));
    return Backoff();
  }
  if (response.status == 0) {
    SetState(SyncState::kUnreachable, response.error);
  } else {
    SetState(SyncState::kError, "GET " + path + ": HTTP " + std::to_string(response.status) + ": " +
                                    StatusMessage(response.body));
  }
  return Backoff();
}

std::chrono::milliseconds ConfigMapSync::Watch() {
  std::chrono::milliseconds timeout = Jitter(options_.watch_timeout, 0.1);
  long long timeout_seconds = std::max<long long>(1, (timeout.count() + 999) / 1000);
  std::string path =
      "/api/v1/namespaces/" + UrlEncode(options_.namespace_) +
      "/configmaps?fieldSelector=" + UrlEncode("metadata.name=" + options_.name) +
      "&watch=1&allowWatchBookmarks=true&timeoutSeconds=" + std::to_string(timeout_seconds);
  if (!resource_version_.empty()) path += "&resourceVersion=" + UrlEncode(resource_version_);

  bool gone = false;    // 410: list again
  bool broken = false;  // an event the shim cannot read
  int events = 0;
  std::string problem;
  auto on_line = [&](std::string_view line) {
    if (gone || broken) return;
    Json event = Json::parse(line, nullptr, false);
    if (!event.is_object() || !event.contains("type") || !event["type"].is_string()) {
      broken = true;
      problem = "a watch event is not JSON with a type";
      return;
    }
    ++events;
    std::string type = event["type"].get<std::string>();
    const Json& object = event.contains("object") ? event["object"] : Json();
    if (type == "ERROR") {
      int code = object.is_object() && object.contains("code") && object["code"].is_number()
                     ? object["code"].get<int>()
                     : 0;
      if (code == 410) {
        gone = true;
      } else {
        broken = true;
        problem = "watch ERROR event, code " + std::to_string(code) + ": " +
                  (object.is_object() ? StatusMessage(object.dump()) : "");
      }
      return;
    }
    std::optional<ObjectView> view = View(object, options_.key);
    if (!view) {
      broken = true;
      problem = "a watch event without an object";
      return;
    }
    if (!view->resource_version.empty()) resource_version_ = view->resource_version;
    if (type == "BOOKMARK") return;
    if (type == "DELETED") {
      SetState(SyncState::kAbsent, "DELETED at resourceVersion " + resource_version_);
      Deliver(std::nullopt);
    } else if (type == "ADDED" || type == "MODIFIED") {
      SetState(view->value ? SyncState::kSynced : SyncState::kKeyAbsent,
               type + " at resourceVersion " + resource_version_);
      Deliver(view->value);
    }
  };

  auto started = std::chrono::steady_clock::now();
  Response response = api_.Watch(
      path, timeout + std::max(options_.watch_timeout / 10, std::chrono::milliseconds(5000)),
      on_line);
  if (response.aborted) return 0ms;
  if (gone || response.status == 410) {
    need_list_ = true;  // the resourceVersion was compacted away: read the object again
    // Gone again right after a fresh read: the server is confused; do not spin on it.
    return ++gone_in_a_row_ > 1 ? Backoff() : 0ms;
  }
  if (events > 0) gone_in_a_row_ = 0;
  if (broken) {
    SetState(SyncState::kError, problem);
    need_list_ = true;
    return Backoff();
  }
  if (response.status == 200) {
    if (events > 0) backoff_ = 0ms;
    auto lasted = std::chrono::steady_clock::now() - started;
    if (!response.error.empty() || (events == 0 && lasted < timeout * kShortWatchFraction)) {
      // Dropped mid-stream or closed at once: resume from the same resourceVersion, after a
      // pause so that a flapping connection does not become a request storm.
      return Backoff();
    }
    return 0ms;
  }
  // No answer at all: resume from the same resourceVersion once the server is back (a 410 then
  // says if it is too old). An HTTP error answer: read the object again.
  if (response.status != 0) need_list_ = true;
  if (response.status == 401 || response.status == 403) {
    SetState(SyncState::kUnauthorized, "watch: HTTP " + std::to_string(response.status) + ": " +
                                           StatusMessage(response.body));
  } else if (response.status == 0) {
    SetState(SyncState::kUnreachable, response.error);
  } else {
    SetState(SyncState::kError, "watch: HTTP " + std::to_string(response.status) + ": " +
                                    StatusMessage(response.body));
  }
  return Backoff();
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
