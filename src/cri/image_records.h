// containerd's image records: its native image metadata service
// (containerd.services.images.v1.Images), which containerd serves on the same socket as CRI. The
// CRI plugin keeps its images in the namespace "k8s.io" and lists an image under the name of
// every record that points at it, so creating and deleting records is how the shim holds a
// pulled image under the name kubelet asked for. Other runtimes do not serve this service.
//
// Asynchronous calls on the relay's upstream connections. Loop thread only.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "containerd_images.pb.h"
#include "relay/event_loop.h"
#include "relay/unary_call.h"
#include "relay/upstream.h"

namespace shim::cri {

using ImageRecord = imagecrishim::containerd::Image;

// The namespace containerd's CRI plugin keeps its images in.
inline constexpr char kCriNamespace[] = "k8s.io";

class ImageRecords {
 public:
  // Both must outlive every call made through this object (the loop and its pool do).
  ImageRecords(relay::EventLoop& loop, relay::UpstreamPool& pool) : loop_(loop), pool_(pool) {}

  // `record` is null when the runtime has no record of that name (NOT_FOUND) or the call failed
  // (then `result` says why).
  using GotRecord =
      std::function<void(const relay::UnaryResult& result, const ImageRecord* record)>;
  using Done = std::function<void(const relay::UnaryResult& result)>;

  void Get(const std::string& name, GotRecord done);
  // Creates `record`; if one of that name exists, sets only `update_paths` of it (containerd's
  // field paths: "target", "labels.<key>"), as containerd's CRI plugin does on a re-pull.
  void Put(const ImageRecord& record, std::vector<std::string> update_paths, Done done);
  // Deletes the record; one that is already gone counts as deleted (ok).
  void Delete(const std::string& name, Done done);

 private:
  void Call(const char* method, std::string message, relay::UnaryCall::Done done) const;

  relay::EventLoop& loop_;
  relay::UpstreamPool& pool_;
};

// What an answer from the image service says about whether the runtime serves it: an image
// record or "not found" says it does; UNIMPLEMENTED (CRI-O, cri-dockerd, containerd with the
// service disabled) says it does not. Anything else (no answer, UNAVAILABLE, INTERNAL, a
// permission error, ...) says nothing either way: ask again later.
enum class ImageApi { kServed, kNotServed, kUnknown };
ImageApi ImageApiFrom(const relay::UnaryResult& answer);

}  // namespace shim::cri
