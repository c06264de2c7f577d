// The shim's own HPACK encoder (RFC 7541), for the header blocks it sends. It never uses the
// dynamic table: every field is a static-table reference or a literal without indexing, with
// its strings as they are (no Huffman). That makes a block independent of every block before
// it, so blocks can be encoded in any order (trailers ahead of their turn, say), and costs a
// copy of the header bytes instead of a table search and a Huffman pass per field, the largest
// cost of a relayed call (docs/performance.md). The blocks are larger on the wire (about 200
// bytes for a gRPC request instead of 30), which a local socket does not notice. Decoding
// stays with libnghttp2's inflater, since peers do use the table.
//
// Pure functions; thread-safe.
#pragma once

#include <string>

#include "relay/grpc_wire.h"

namespace shim::relay {

// Appends the header block of `headers` to `out`.
void EncodeHeaderBlock(const Headers& headers, std::string& out);

}  // namespace shim::relay
