// The two faces of a call as the connections see it. A DownstreamConnection (kubelet side)
// drives a ServerStream; an UpstreamConnection (runtime side) drives an UpstreamStream. A relayed
// call is both; the shim's own calls to the runtime are only UpstreamStreams.
//
// Loop thread only. Connections hold streams by shared_ptr until the stream closes on their
// side, and hold a reference while calling into one, so a stream may drop the last other
// reference to itself from inside any of these methods.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "relay/grpc_wire.h"

namespace shim::relay {

// Either face, as an HTTP/2 stream of a connection holds it (Http2Connection::Attach).
class StreamHandler {
 public:
  virtual ~StreamHandler() = default;
};

class ServerStream : public StreamHandler {
 public:
  virtual void OnRequestData(const uint8_t* data, size_t n) = 0;
  virtual void OnRequestEnd() = 0;
  // The downstream stream is closed (error_code NO_ERROR after a normal end) or its connection
  // is gone. No downstream call is made for this stream afterwards.
  virtual void OnDownstreamClosed(uint32_t error_code) = 0;
  // nghttp2 data source for the response body: bytes, 0 with NGHTTP2_DATA_FLAG_EOF, or
  // NGHTTP2_ERR_DEFERRED when nothing is buffered yet.
  virtual ssize_t ReadResponse(uint8_t* buf, size_t length, uint32_t* data_flags) = 0;
};

class UpstreamStream : public StreamHandler {
 public:
  // First HEADERS of the answer; end_stream means trailers-only. The header blocks are valid
  // during the call only.
  virtual void OnResponseHeaders(const Headers& headers, bool end_stream) = 0;
  virtual void OnResponseData(const uint8_t* data, size_t n) = 0;
  virtual void OnResponseTrailers(const Headers& trailers) = 0;
  // The upstream stream is closed: NO_ERROR after a normal end, the peer's RST_STREAM code, or
  // NGHTTP2_REFUSED_STREAM / NGHTTP2_INTERNAL_ERROR when the connection went away (`reason`).
  virtual void OnUpstreamClosed(uint32_t error_code, const std::string& reason) = 0;
  // nghttp2 data source for the request body, as ServerStream::ReadResponse.
  virtual ssize_t ReadRequest(uint8_t* buf, size_t length, uint32_t* data_flags) = 0;
};

}  // namespace shim::relay
