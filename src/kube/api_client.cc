#include "kube/api_client.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>

#include "net/http_client.h"
#include "util/file.h"

namespace shim::kube {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxBody = 8 << 20;  // a ConfigMap is at most 1 MiB; more is not an answer
// A watch's lines not yet handed out: above this the worker stops reading until the owner
// drains them (the download slows down to the owner's pace instead of filling memory).
constexpr size_t kMaxBufferedLines = 8 << 20;
constexpr auto kGetTimeout = 30s;
constexpr auto kConnectTimeout = 10s;
// After its deadline a request is cancelled; its worker normally ends within milliseconds and
// the request is reported with what it got (a watch's 200). A worker still running after this
// grace is inside what a cancel cannot interrupt (getaddrinfo): the timeout is reported anyway
// and the worker is joined later.
constexpr auto kAbandonGrace = 250ms;
// The shortest wait of Poll while a request is past its deadline (no busy loop meanwhile).
constexpr auto kMinWaitAfterDeadline = 10ms;

std::string Trim(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.pop_back();
  }
  return text;
}

// One request: its worker thread fills the shared part, the owning thread hands it out.
struct Transfer {
  ApiClient::RequestId id = 0;
  bool watch = false;
  std::chrono::milliseconds timeout{0};
  Clock::time_point deadline;
  ApiClient::OnLine on_line;  // owner only
  ApiClient::OnDone done;     // owner only
  net::CancelToken cancel;
  std::thread worker;

  std::mutex mutex;
  // GUARDED_BY(mutex), written by the worker:
  std::string body;
  std::string pending;              // watch: bytes after the last newline
  std::deque<std::string> lines;    // watch: complete lines not yet given to on_line
  size_t buffered = 0;              // watch: bytes in `lines`
  bool stop_waiting = false;        // set by the owner: cancelled or timed out, never drained
  std::condition_variable drained;  // the owner took lines, or stop_waiting
  int status = 0;                   // the answer's status, once body bytes came
  bool too_big = false;
  bool finished = false;
  bool timed_out = false;  // set by the owner when the deadline passed
  net::HttpResponse result;
};

class HttplibApiClient final : public ApiClient {
 public:
  HttplibApiClient(Credentials credentials, WaitHooks hooks, std::optional<net::ProxyEnv> proxy)
      : credentials_(std::move(credentials)), hooks_(std::move(hooks)), proxy_(std::move(proxy)) {
    wake_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    // Without it no worker could wake the owner: every request then fails with this reason.
    if (wake_ < 0) wake_error_ = std::string("cannot create an eventfd: ") + std::strerror(errno);
  }
  ~HttplibApiClient() override {
    while (!transfers_.empty()) Cancel(transfers_.begin()->first);
    for (auto& t : abandoned_) Join(*t);
    if (wake_ >= 0) close(wake_);
  }

  RequestId StartGet(const std::string& path, OnDone done) override {
    return Start(path, kGetTimeout, nullptr, std::move(done));
  }

  RequestId StartWatch(const std::string& path, std::chrono::milliseconds timeout, OnLine on_line,
                       OnDone done) override {
    if (!on_line) on_line = [](std::string_view) {};
    return Start(path, timeout, std::move(on_line), std::move(done));
  }

  void Cancel(RequestId id) override {
    auto it = transfers_.find(id);
    if (it == transfers_.end()) return;
    // The worker ends soon (its socket is shut down); it is joined later, never waited for here.
    it->second->cancel.Cancel();
    StopWaiting(*it->second);
    abandoned_.push_back(std::move(it->second));
    transfers_.erase(it);
  }

  size_t InFlight() const override { return transfers_.size(); }

  void Poll(std::chrono::milliseconds max_wait, const std::vector<int>& fds) override {
    Reap();
    if (Drive()) return;
    auto wait = std::clamp<std::chrono::milliseconds>(max_wait, 0ms, 60000ms);
    auto now = Clock::now();
    for (const auto& [id, t] : transfers_) {
      // Before its deadline: until the deadline. After it (cancelled, its worker not done yet):
      // until the grace ends, at least kMinWaitAfterDeadline (the worker's end wakes us anyway).
      bool late = now >= t->deadline;
      auto due = late ? t->deadline + kAbandonGrace : t->deadline;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(due - now) + 1ms;
      wait = std::min(wait, std::max(left, late ? kMinWaitAfterDeadline : 0ms));
    }
    std::vector<pollfd> polled{{wake_, POLLIN, 0}};  // -1 (no eventfd): ignored by poll
    for (int fd : fds) {
      if (fd >= 0) polled.push_back({fd, POLLIN, 0});
    }
    poll(polled.data(), polled.size(), static_cast<int>(wait.count()));
    uint64_t count;
    while (wake_ >= 0 && read(wake_, &count, sizeof count) > 0) {
    }
    Drive();
  }

  bool Await(RequestId id) override {
    while (transfers_.count(id) != 0) {
      auto wait = 1000ms;
      if (hooks_.max_wait)
        wait = std::clamp<std::chrono::milliseconds>(hooks_.max_wait(), 0ms, 1000ms);
      Poll(wait, hooks_.fds);
      if (transfers_.count(id) == 0) return true;
      if (hooks_.on_wake && !hooks_.on_wake()) {
        Cancel(id);
        return false;
      }
    }
    return true;
  }

 private:
  // What a request authenticates and verifies with: the PEM texts, whether given inline or in
  // files. Empty = not set.
  struct Secrets {
    std::string token;
    std::string ca;
    std::string cert;
    std::string key;
  };

  // `data` if set, else the content of `file` if set. The error names the file, the system's
  // reason and which credential it is, never the content.
  bool Pem(const std::string& data, const std::string& file, const char* what, std::string* out,
           std::string* error) const {
    if (!data.empty() || file.empty()) {
      *out = data;
      return true;
    }
    StatusOr<std::string> text = util::ReadWholeFile(file);
    if (!text.ok()) {
      *error = text.status().message() + " (the " + what +
               (credentials_.source.empty() ? "" : " of " + credentials_.source) +
               "); fix the file or its permissions";
      return false;
    }
    *out = std::move(text).value();
    return true;
  }

  // Files are read again on every request: kubelet rotates projected service account tokens
  // (and their ca.crt). Reading them here reports an unreadable one with its reason instead of
  // as a vague TLS failure.
  bool ReadSecrets(Secrets* out, std::string* error) const {
    if (!Pem(credentials_.token, credentials_.token_file, "bearer token file", &out->token,
             error)) {
      return false;
    }
    if (credentials_.token.empty()) out->token = Trim(std::move(out->token));  // file's newline
    return Pem(credentials_.ca_data, credentials_.ca_file, "CA file", &out->ca, error) &&
           Pem(credentials_.client_cert_data, credentials_.client_cert_file,
               "client certificate file", &out->cert, error) &&
           Pem(credentials_.client_key_data, credentials_.client_key_file, "client key file",
               &out->key, error);
  }

  RequestId Start(const std::string& path, std::chrono::milliseconds timeout, OnLine on_line,
                  OnDone done) {
    auto owned = std::make_unique<Transfer>();
    Transfer& t = *owned;
    t.id = next_id_++;
    t.watch = static_cast<bool>(on_line);
    t.on_line = std::move(on_line);
    t.done = std::move(done);
    t.timeout = timeout;
    t.deadline = Clock::now() + timeout;
    Secrets secrets;
    std::string start_error = wake_error_;
    if (!start_error.empty() || !ReadSecrets(&secrets, &start_error)) {
      return Failed(std::move(owned), start_error);
    }
    net::HttpRequest request;
    request.url = credentials_.server + path;
    request.headers.emplace_back("Accept", "application/json");
    if (!secrets.token.empty())
      request.headers.emplace_back("Authorization", "Bearer " + secrets.token);
    request.tls.verify = !credentials_.insecure_skip_tls_verify;
    // A CA given replaces the system's store, as in client-go.
    request.tls.system_roots = secrets.ca.empty();
    request.tls.ca_pem = std::move(secrets.ca);
    request.tls.client_cert_pem = std::move(secrets.cert);
    request.tls.client_key_pem = std::move(secrets.key);
    request.tls.what = credentials_.source;
    request.connect_timeout = kConnectTimeout;
    // A watch may be silent for long (no change, no bookmark yet): only its deadline ends it.
    request.read_timeout = timeout;
    if (proxy_) request.proxy_env = &*proxy_;
    try {
      t.worker = std::thread([this, &t, request = std::move(request)] { Run(t, request); });
    } catch (const std::system_error& e) {  // EAGAIN: out of threads (ulimit -u, pids.max)
      return Failed(std::move(owned), std::string("cannot start a thread for the request: ") +
                                          e.what() + " (too many threads or processes?)");
    }
    RequestId id = t.id;
    transfers_.emplace(id, std::move(owned));
    return id;
  }

  // A request that never started: reported as failed by the next Poll, never from inside the
  // Start call (callbacks run only in Poll and Await).
  RequestId Failed(std::unique_ptr<Transfer> owned, std::string error) {
    RequestId id = owned->id;
    owned->finished = true;
    owned->result.error = std::move(error);
    transfers_.emplace(id, std::move(owned));
    Notify();
    return id;
  }

  // The worker: one blocking GET; bytes are only buffered here, lines are handed out by the
  // owner (so that their consumers may start or cancel requests).
  void Run(Transfer& t, const net::HttpRequest& request) {
    net::HttpResponse result = net::HttpGet(
        request,
        [this, &t](int status, std::string_view data) {
          std::unique_lock lock(t.mutex);
          t.status = status;
          if (t.watch && status == 200) {
            t.pending.append(data);
            size_t start = 0;
            for (size_t nl; (nl = t.pending.find('\n', start)) != std::string::npos;
                 start = nl + 1) {
              std::string_view line(t.pending.data() + start, nl - start);
              if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
              if (!line.empty()) {
                t.lines.emplace_back(line);
                t.buffered += line.size();
              }
            }
            t.pending.erase(0, start);
            if (t.pending.size() > kMaxBody) t.too_big = true;
            if (t.buffered > kMaxBufferedLines && !t.too_big) {
              // The owner is behind: hand out what is here, read on once it caught up.
              lock.unlock();
              Notify();
              lock.lock();
              t.drained.wait(lock,
                             [&t] { return t.buffered <= kMaxBufferedLines || t.stop_waiting; });
              if (t.stop_waiting) return false;
            }
            bool stop = t.too_big;
            bool news = !t.lines.empty();
            lock.unlock();
            if (news) Notify();  // lines are handed out as they come
            return !stop;
          } else if (t.body.size() + data.size() > kMaxBody) {
            t.too_big = true;
          } else {
            t.body.append(data);
          }
          return !t.too_big;
        },
        &t.cancel);
    {
      std::lock_guard lock(t.mutex);
      t.result = std::move(result);
      t.finished = true;
    }
    Notify();
  }

  void Notify() {
    uint64_t one = 1;
    if (wake_ >= 0) (void)!write(wake_, &one, sizeof one);
  }

  // Releases a worker waiting for the owner to drain lines that nobody will take any more.
  static void StopWaiting(Transfer& t) {
    {
      std::lock_guard lock(t.mutex);
      t.stop_waiting = true;
    }
    t.drained.notify_all();
  }

  static void Join(Transfer& t) {
    if (t.worker.joinable()) t.worker.join();
  }

  // Joins the workers of cancelled (or abandoned after their deadline) requests that have ended.
  void Reap() {
    for (auto it = abandoned_.begin(); it != abandoned_.end();) {
      bool finished;
      {
        std::lock_guard lock((*it)->mutex);
        finished = (*it)->finished;
      }
      if (!finished && (*it)->worker.joinable()) {
        ++it;
        continue;
      }
      Join(**it);
      it = abandoned_.erase(it);
    }
  }

  // Ends requests past their deadline, hands out lines and completions. True when any callback
  // ran. A request whose worker is still running kAbandonGrace after the deadline is reported
  // as timed out at once, and its worker moves to abandoned_ (joined by Reap or the destructor).
  bool Drive() {
    auto now = Clock::now();
    for (auto& [id, t] : transfers_) {
      if (now < t->deadline) continue;
      std::lock_guard lock(t->mutex);
      if (!t->finished && !t->timed_out) {
        t->timed_out = true;
        t->stop_waiting = true;
        t->cancel.Cancel();
        t->drained.notify_all();
      }
    }
    bool ran = false;
    std::vector<RequestId> ids;
    ids.reserve(transfers_.size());
    for (const auto& [id, t] : transfers_) ids.push_back(id);
    for (RequestId id : ids) {
      // Each callback may cancel any request, this one included: look it up again every time.
      for (auto it = transfers_.find(id); it != transfers_.end(); it = transfers_.find(id)) {
        std::string line;
        {
          std::lock_guard lock(it->second->mutex);
          Transfer& t = *it->second;
          if (t.lines.empty()) break;
          line = std::move(t.lines.front());
          t.lines.pop_front();
          bool was_full = t.buffered > kMaxBufferedLines;
          t.buffered -= line.size();
          if (was_full && t.buffered <= kMaxBufferedLines) t.drained.notify_all();
        }
        ran = true;
        it->second->on_line(line);
      }
    }
    for (RequestId id : ids) {
      auto it = transfers_.find(id);
      if (it == transfers_.end()) continue;
      Transfer& t = *it->second;
      Response response;
      bool abandon = false;
      {
        std::lock_guard lock(t.mutex);
        abandon = !t.finished && t.timed_out && now >= t.deadline + kAbandonGrace;
        if (!abandon && (!t.finished || !t.lines.empty())) continue;
        t.lines.clear();  // abandoned: only what came after the deadline is left
        t.buffered = 0;
        response.status = t.finished ? t.result.status : t.status;
        response.error = t.result.error;
        if (t.timed_out) {
          response.error = "timed out after " + std::to_string(t.timeout.count()) + " ms (" +
                           credentials_.server + ")";
        } else if (t.too_big) {
          response.error = "answer larger than 8 MiB";
        }
        bool whole = response.error.empty();
        if (!whole && !t.watch) response.status = 0;  // a GET without a whole body has no answer
        response.body = std::move(t.body);
      }
      OnDone done = std::move(t.done);
      if (abandon) {
        abandoned_.push_back(std::move(it->second));  // the worker still uses it
      } else {
        Join(t);
      }
      transfers_.erase(it);
      ran = true;
      if (done) done(std::move(response));
    }
    return ran;
  }

  Credentials credentials_;
  WaitHooks hooks_;
  std::optional<net::ProxyEnv> proxy_;  // nullopt: the process's environment
  int wake_ = -1;                       // eventfd: a worker has news
  std::string wake_error_;              // why there is no eventfd
  RequestId next_id_ = 1;
  std::map<RequestId, std::unique_ptr<Transfer>> transfers_;
  // Cancelled or reported timed out, worker not joined yet (by Reap, or the destructor).
  std::vector<std::unique_ptr<Transfer>> abandoned_;
};

}  // namespace

Response ApiClient::Get(const std::string& path) {
  Response out;
  RequestId id = StartGet(path, [&out](Response r) { out = std::move(r); });
  if (!Await(id)) out.aborted = true;
  return out;
}

Response ApiClient::Watch(const std::string& path, std::chrono::milliseconds timeout,
                          const std::function<void(std::string_view)>& on_line) {
  Response out;
  RequestId id = StartWatch(path, timeout, on_line, [&out](Response r) { out = std::move(r); });
  if (!Await(id)) {
    out = Response{};
    out.aborted = true;
  }
  return out;
}

std::unique_ptr<ApiClient> MakeApiClient(Credentials credentials, WaitHooks hooks,
                                         std::optional<net::ProxyEnv> proxy) {
  return std::make_unique<HttplibApiClient>(std::move(credentials), std::move(hooks),
                                            std::move(proxy));
}

}  // namespace shim::kube
