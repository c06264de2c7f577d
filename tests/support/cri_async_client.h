// Unary CRI calls that do not block a thread each, for load and fault tests: many calls in flight
// at once (RunAll), or one call that the test cancels at a moment of its choosing (Start, then
// Cancel) instead of after a fixed time. Calls use the callback API of grpc::GenericStub and are
// spread round-robin over several channels that share no connection: each channel has a
// subchannel pool of its own, whereas plain channels with equal arguments (two CriClients, say)
// share one connection. For tests and test tools; one thread uses an object at a time.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/support/status.h>

namespace shim::testing {

class CriAsyncClient {
 public:
  struct Call {
    std::string path;     // e.g. "/runtime.v1.RuntimeService/Version"
    std::string request;  // the serialized request message
  };
  struct Result {
    std::vector<grpc::Status> statuses;  // one per call, in the order given
    std::vector<std::string> responses;  // the answer bytes of each call ("" unless OK)
    std::chrono::milliseconds took{0};   // from the first start to the last answer
    std::map<grpc::StatusCode, int> Codes() const;
    int Ok() const;
  };

  // One call in flight. Destroying it cancels the call (if still running) and waits for it.
  class InFlight {
   public:
    ~InFlight();
    InFlight(const InFlight&) = delete;
    InFlight& operator=(const InFlight&) = delete;
    // Cancels the call as a caller that gives up does (RST_STREAM CANCEL): no deadline involved.
    void Cancel();
    // Waits for the answer; `response` (if given) gets its bytes when OK.
    grpc::Status Wait(std::string* response = nullptr);

   private:
    friend class CriAsyncClient;
    struct State;
    explicit InFlight(std::shared_ptr<State> state);
    std::shared_ptr<State> state_;
  };

  // `connections` channels to `socket_path`, connecting lazily (Connect() forces it).
  CriAsyncClient(const std::string& socket_path, int connections);
  ~CriAsyncClient();
  CriAsyncClient(const CriAsyncClient&) = delete;
  CriAsyncClient& operator=(const CriAsyncClient&) = delete;

  // Connects every channel; false when one is not ready within `timeout`.
  bool Connect(std::chrono::milliseconds timeout);
  // Starts every call at once (each with `deadline`), then waits for all of them.
  Result RunAll(const std::vector<Call>& calls, std::chrono::milliseconds deadline);
  // Starts one call, without a deadline unless one is given.
  std::unique_ptr<InFlight> Start(const Call& call,
                                  std::optional<std::chrono::milliseconds> deadline = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// `count` calls alternating Version (even positions) and ImageStatus of `image` (odd ones), v1:
// the mixed load of the flood tests and of the benchmark's floods.
std::vector<CriAsyncClient::Call> VersionAndImageStatusCalls(int count, const std::string& image);

}  // namespace shim::testing
