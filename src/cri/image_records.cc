#include "cri/image_records.h"

namespace shim::cri {

namespace pbc = imagecrishim::containerd;
using relay::GrpcCode;
using relay::UnaryResult;

namespace {

bool Is(const UnaryResult& result, GrpcCode code) {
  return result.answered && result.code == static_cast<int>(code);
}

}  // namespace

void ImageRecords::Call(const char* method, std::string message,
                        relay::UnaryCall::Done done) const {
  relay::Headers headers =
      relay::UnaryCall::OwnHeaders(std::string("/containerd.services.images.v1.Images/") + method);
  headers.push_back({"containerd-namespace", kCriNamespace});
  relay::UnaryCall::Start(loop_, pool_, headers, relay::FrameMessage(message), std::move(done));
}

void ImageRecords::Get(const std::string& name, GotRecord done) {
  pbc::GetImageRequest request;
  request.set_name(name);
  Call("Get", request.SerializeAsString(), [done = std::move(done)](UnaryResult result) {
    pbc::GetImageResponse response;
    auto message = result.Message();
    if (result.ok() && message &&
        response.ParseFromArray(message->data(), static_cast<int>(message->size())) &&
        response.has_image()) {
      return done(result, &response.image());
    }
    if (result.ok()) {  // an answer without a record: treat as unreadable, never as absent
      result.answered = false;
      result.code = static_cast<int>(GrpcCode::kInternal);
      result.message = "the image service answered Get without an image record";
    }
    done(result, nullptr);
  });
}

void ImageRecords::Put(const ImageRecord& record, std::vector<std::string> update_paths,
                       Done done) {
  pbc::CreateImageRequest create;
  *create.mutable_image() = record;
  Call("Create", create.SerializeAsString(),
       // A copy of this (two references): the answer may come after a temporary is gone.
       [records = *this, record, paths = std::move(update_paths),
        done = std::move(done)](UnaryResult result) {
         if (!Is(result, GrpcCode::kAlreadyExists)) return done(result);
         pbc::UpdateImageRequest update;
         *update.mutable_image() = record;
         for (const auto& path : paths) update.mutable_update_mask()->add_paths(path);
         records.Call("Update", update.SerializeAsString(),
                      [done](UnaryResult result) { done(result); });
       });
}

void ImageRecords::Delete(const std::string& name, Done done) {
  pbc::DeleteImageRequest request;
  request.set_name(name);
  Call("Delete", request.SerializeAsString(), [done = std::move(done)](UnaryResult result) {
    if (Is(result, GrpcCode::kNotFound)) {
      result.code = static_cast<int>(GrpcCode::kOk);
      result.message.clear();
    }
    done(result);
  });
}

ImageApi ImageApiFrom(const UnaryResult& answer) {
  if (answer.ok() || Is(answer, GrpcCode::kNotFound)) return ImageApi::kServed;
  if (Is(answer, GrpcCode::kUnimplemented)) return ImageApi::kNotServed;
  return ImageApi::kUnknown;
}

}  // namespace shim::cri
