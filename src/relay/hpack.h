// HPACK (RFC 7541), both directions of the relay's header blocks.
//
// The encoder never uses the dynamic table: every field is a static-table reference or a
// literal without indexing, with its strings as they are (no Huffman). That makes a block
// independent of every block before it, so blocks can be encoded in any order (trailers ahead of
// their turn, say), and costs a copy of the header bytes instead of a table search and a Huffman
// pass per field (docs/performance.md). The blocks are larger on the wire (about 200 bytes for a
// gRPC request instead of 30), which a local socket does not notice.
//
// The decoder takes what peers send: they do use the dynamic table and Huffman coding, and a
// relayed call decodes three blocks, so it is built for the common case of a field found in a
// table (a copy of two strings) and Huffman strings of a few dozen bytes.
//
// Loop thread only (a decoder belongs to one connection); EncodeHeaderBlock is thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "relay/grpc_wire.h"

namespace shim::relay {

// SETTINGS_HEADER_TABLE_SIZE's default, which the relay never changes.
inline constexpr size_t kHpackDefaultTableSize = 4096;

// Appends the header block of `headers` to `out`.
void EncodeHeaderBlock(const Headers& headers, std::string& out);

// The decoding side of one connection: its dynamic table follows every block the peer sends, in
// order.
class HpackDecoder {
 public:
  // `table_size_limit`: the SETTINGS_HEADER_TABLE_SIZE the peer was told.
  explicit HpackDecoder(size_t table_size_limit = kHpackDefaultTableSize);

  // Decodes one whole header block into `headers`, replacing what was there (whose strings'
  // room is reused, so a connection decoding into the same vector allocates nothing once its
  // blocks have been seen). When the list is over `max_list_size` (RFC 9113 6.5.2 sizes: name +
  // value + 32 per field), `headers` is left empty, and decoding goes on to the end, since the
  // table must still see every field. `list_size` is set to the list's size. Returns nullptr, or
  // what is wrong with the block: a COMPRESSION_ERROR for the connection, whose table is then
  // out of step (and `headers` partly written).
  const char* Decode(const uint8_t* block, size_t length, size_t max_list_size, Headers& headers,
                     size_t& list_size);

  // Entries in the dynamic table (tests).
  size_t table_entries() const { return count_; }
  // Bytes the table's strings hold room for, live entries and evicted ones (tests).
  size_t retained_room() const;

  // Room an evicted entry's strings keep for the entry that will replace them: enough for the
  // fields peers index (paths, user agents, content types).
  static constexpr size_t kKeptRoom = 64;

 private:
  // The field at a 1-based HPACK index (static table first, then dynamic, newest first), or
  // nullptr when there is none.
  const Header* Field(uint32_t index) const;
  // Adds a field as the newest entry, evicting the oldest ones to make room (4.4).
  void Insert(const Header& field);
  // Evicts the oldest entries until the table holds at most `size` bytes.
  void EvictTo(size_t size);

  size_t limit_;     // the most a size update may set
  size_t max_size_;  // the table's bound now
  size_t size_ = 0;  // of the entries, RFC 7541 4.1 sizes
  // The entries as a ring, newest at newest_; an entry takes at least 32 bytes, so limit_ / 32
  // of them fill it. Evicted strings keep up to kKeptRoom for the entries that replace them.
  std::vector<Header> ring_;
  size_t newest_ = 0;
  size_t count_ = 0;
};

}  // namespace shim::relay
