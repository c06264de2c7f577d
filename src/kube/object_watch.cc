#include "kube/object_watch.h"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace shim::kube {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

// A watch that ends cleanly sooner than this without any event is treated as a failure, so a
// server that closes watches at once cannot turn the loop into polling.
constexpr double kShortWatchFraction = 0.1;

// What matters of one object: its resourceVersion and its state.
struct ObjectView {
  std::string resource_version;
  ObjectState state;
};

std::optional<ObjectView> View(const Json& object) {
  if (!object.is_object()) return std::nullopt;
  ObjectView view;
  view.state.exists = true;
  auto metadata = object.find("metadata");
  if (metadata != object.end() && metadata->is_object()) {
    auto rv = metadata->find("resourceVersion");
    if (rv != metadata->end() && rv->is_string()) view.resource_version = rv->get<std::string>();
  }
  auto type = object.find("type");
  if (type != object.end() && type->is_string()) view.state.type = type->get<std::string>();
  auto data = object.find("data");
  if (data != object.end() && data->is_object()) {
    for (const auto& [key, value] : data->items()) {
      if (value.is_string()) view.state.data[key] = value.get<std::string>();
    }
  }
  return view;
}

// The first line of a Status answer's message, for logs ("configmaps \"x\" is forbidden: ...").
// A Status never carries the object's data, so never a secret.
std::string StatusMessage(const std::string& body) {
  Json status = Json::parse(body, nullptr, false);
  if (status.is_object() && status.contains("message") && status["message"].is_string()) {
    return status["message"].get<std::string>();
  }
  if (status.is_object() && status.value("kind", "") != "Status") return "(not a Status)";
  return body.substr(0, std::min<size_t>(body.size(), 200));
}

}  // namespace

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

ObjectWatch::ObjectWatch(ApiClient& api, std::string resource, SyncOptions options,
                         Callbacks callbacks)
    : api_(api),
      resource_(std::move(resource)),
      options_(std::move(options)),
      callbacks_(std::move(callbacks)),
      random_(std::random_device{}()) {}

ObjectWatch::~ObjectWatch() {
  if (request_ != 0) api_.Cancel(request_);
}

std::string ObjectWatch::Describe() const {
  return resource_ + " " + options_.namespace_ + "/" + options_.name;
}

void ObjectWatch::Poke() {
  if (request_ == 0 && Clock::now() >= due_) Start();
}

std::chrono::milliseconds ObjectWatch::Step() {
  if (request_ == 0) Start();
  ApiClient::RequestId id = request_;
  if (!api_.Await(id)) {
    request_ = 0;  // abandoned: the next Step starts over from the same point
    return 0ms;
  }
  return last_delay_;
}

void ObjectWatch::Start() {
  if (need_list_) {
    StartList();
  } else {
    StartWatch();
  }
}

void ObjectWatch::Finish(std::chrono::milliseconds delay) {
  request_ = 0;
  last_delay_ = delay;
  due_ = Clock::now() + delay;
}

void ObjectWatch::Answer(SyncState state, const std::string& detail, ObjectState object) {
  bool changed = !object_ || *object_ != object;
  object_ = std::move(object);  // before on_state: it may look at what this answer holds
  SetState(state, detail);
  if (changed && callbacks_.on_object) callbacks_.on_object(*object_);
}

void ObjectWatch::SetState(SyncState state, const std::string& detail) {
  state_ = state;
  if (callbacks_.on_state) callbacks_.on_state(state, detail);
}

std::chrono::milliseconds ObjectWatch::Jitter(std::chrono::milliseconds base, double spread) {
  std::uniform_real_distribution<double> factor(1.0 - spread, 1.0 + spread);
  return std::chrono::milliseconds(static_cast<long long>(base.count() * factor(random_)));
}

std::chrono::milliseconds ObjectWatch::Backoff() {
  backoff_ = backoff_.count() == 0 ? options_.backoff_initial
                                   : std::min(backoff_ * 2, options_.backoff_max);
  return Jitter(backoff_, 0.2);
}

void ObjectWatch::StartList() {
  std::string path = "/api/v1/namespaces/" + UrlEncode(options_.namespace_) + "/" + resource_ +
                     "/" + UrlEncode(options_.name);
  request_ = api_.StartGet(path, [this, path](Response response) { OnList(path, response); });
}

void ObjectWatch::OnList(const std::string& path, const Response& response) {
  request_ = 0;
  if (response.status == 200) {
    Json object = Json::parse(response.body, nullptr, false);
    std::optional<ObjectView> view = View(object);
    if (!view) {
      SetState(SyncState::kError, "the answer to GET " + path + " is not an object");
      return Finish(Backoff());
    }
    resource_version_ = view->resource_version;
    need_list_ = false;
    backoff_ = 0ms;
    Finish(0ms);
    Answer(SyncState::kSynced, "resourceVersion " + resource_version_, std::move(view->state));
    return;
  }
  if (response.status == 404) {
    // Watching without a resourceVersion starts with the current state, so an object created
    // later arrives as ADDED without any polling.
    resource_version_.clear();
    need_list_ = false;
    backoff_ = 0ms;
    Finish(0ms);
    Answer(SyncState::kAbsent, "GET " + path + ": 404 Not Found", ObjectState{});
    return;
  }
  Finish(Backoff());
  if (response.status == 401 || response.status == 403) {
    SetState(SyncState::kUnauthorized, "GET " + path + ": HTTP " + std::to_string(response.status) +
                                           ": " + StatusMessage(response.body));
  } else if (response.status == 0) {
    SetState(SyncState::kUnreachable, response.error);
  } else {
    SetState(SyncState::kError, "GET " + path + ": HTTP " + std::to_string(response.status) + ": " +
                                    StatusMessage(response.body));
  }
}

void ObjectWatch::StartWatch() {
  run_ = WatchRun{};
  run_.timeout = Jitter(options_.watch_timeout, 0.1);
  run_.started = Clock::now();
  long long timeout_seconds = std::max<long long>(1, (run_.timeout.count() + 999) / 1000);
  std::string path =
      "/api/v1/namespaces/" + UrlEncode(options_.namespace_) + "/" + resource_ +
      "?fieldSelector=" + UrlEncode("metadata.name=" + options_.name) +
      "&watch=1&allowWatchBookmarks=true&timeoutSeconds=" + std::to_string(timeout_seconds);
  if (!resource_version_.empty()) path += "&resourceVersion=" + UrlEncode(resource_version_);
  request_ = api_.StartWatch(
      path, run_.timeout + std::max(options_.watch_timeout / 10, std::chrono::milliseconds(5000)),
      [this](std::string_view line) { OnWatchLine(line); },
      [this](Response response) { OnWatchDone(response); });
}

void ObjectWatch::OnWatchLine(std::string_view line) {
  if (run_.gone || run_.broken) return;
  Json event = Json::parse(line, nullptr, false);
  if (!event.is_object() || !event.contains("type") || !event["type"].is_string()) {
    run_.broken = true;
    run_.problem = "a watch event is not JSON with a type";
    return;
  }
  ++run_.events;
  std::string type = event["type"].get<std::string>();
  const Json& object = event.contains("object") ? event["object"] : Json();
  if (type == "ERROR") {
    int code = object.is_object() && object.contains("code") && object["code"].is_number()
                   ? object["code"].get<int>()
                   : 0;
    if (code == 410) {
      run_.gone = true;
    } else {
      run_.broken = true;
      run_.problem = "watch ERROR event, code " + std::to_string(code) + ": " +
                     (object.is_object() ? StatusMessage(object.dump()) : "");
    }
    return;
  }
  std::optional<ObjectView> view = View(object);
  if (!view) {
    run_.broken = true;
    run_.problem = "a watch event without an object";
    return;
  }
  if (!view->resource_version.empty()) resource_version_ = view->resource_version;
  if (type == "BOOKMARK") return;
  if (type == "DELETED") {
    Answer(SyncState::kAbsent, "DELETED at resourceVersion " + resource_version_, ObjectState{});
  } else if (type == "ADDED" || type == "MODIFIED") {
    Answer(SyncState::kSynced, type + " at resourceVersion " + resource_version_,
           std::move(view->state));
  }
}

void ObjectWatch::OnWatchDone(const Response& response) {
  request_ = 0;
  const WatchRun run = run_;
  if (run.gone || response.status == 410) {
    need_list_ = true;  // the resourceVersion was compacted away: read the object again
    // Gone again right after a fresh read: the server is confused; do not spin on it.
    return Finish(++gone_in_a_row_ > 1 ? Backoff() : 0ms);
  }
  if (run.events > 0) gone_in_a_row_ = 0;
  if (run.broken) {
    need_list_ = true;
    Finish(Backoff());
    SetState(SyncState::kError, run.problem);
    return;
  }
  if (response.status == 200) {
    if (run.events > 0) backoff_ = 0ms;
    auto lasted = Clock::now() - run.started;
    if (!response.error.empty() ||
        (run.events == 0 && lasted < run.timeout * kShortWatchFraction)) {
      // Dropped mid-stream or closed at once: resume from the same resourceVersion, after a
      // pause so that a flapping connection does not become a request storm.
      return Finish(Backoff());
    }
    return Finish(0ms);
  }
  // No answer at all: resume from the same resourceVersion once the server is back (a 410 then
  // says if it is too old). An HTTP error answer: read the object again.
  if (response.status != 0) need_list_ = true;
  Finish(Backoff());
  if (response.status == 401 || response.status == 403) {
    SetState(SyncState::kUnauthorized, "watch " + Describe() + ": HTTP " +
                                           std::to_string(response.status) + ": " +
                                           StatusMessage(response.body));
  } else if (response.status == 0) {
    SetState(SyncState::kUnreachable, response.error);
  } else {
    SetState(SyncState::kError, "watch " + Describe() + ": HTTP " +
                                    std::to_string(response.status) + ": " +
                                    StatusMessage(response.body));
  }
}

}  // namespace shim::kube
