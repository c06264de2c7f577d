// Fuzz target: the relay's HPACK decoder (src/relay/hpack.h) against libnghttp2's, on one
// connection's worth of header blocks. The input is a series of blocks, each after a two-byte
// big-endian length (cut short by the input's end); both decoders keep their tables from block to
// block, as on a connection, and the series stops at the first block either refuses.
// Properties: no crash or UB; the two accept and refuse the same blocks; an accepted block gives
// the same fields, in order, with the same list size; the tables hold as many entries.
#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_check.h"
#include "relay/hpack.h"

namespace {

using shim::relay::Header;
using shim::relay::Headers;

// The relay's bound on a decoded list: past it neither side keeps the fields, only the size.
constexpr size_t kMaxList = 1 << 20;
constexpr size_t kStaticEntries = 61;

// libnghttp2's view of a block: false when it refuses it.
bool ReferenceDecode(nghttp2_hd_inflater* inflater, const uint8_t* in, size_t left,
                     Headers& headers, size_t& list_size) {
  list_size = 0;
  while (true) {
    nghttp2_nv nv;
    int flags = 0;
    ssize_t n = nghttp2_hd_inflate_hd2(inflater, &nv, &flags, in, left, 1);
    if (n < 0) return false;
    in += n;
    left -= static_cast<size_t>(n);
    if (flags & NGHTTP2_HD_INFLATE_EMIT) {
      list_size += nv.namelen + nv.valuelen + 32;
      if (list_size > kMaxList) {
        headers.clear();
      } else {
        headers.push_back({std::string(reinterpret_cast<const char*>(nv.name), nv.namelen),
                           std::string(reinterpret_cast<const char*>(nv.value), nv.valuelen)});
      }
    }
    if (flags & NGHTTP2_HD_INFLATE_FINAL) {
      nghttp2_hd_inflate_end_headers(inflater);
      return true;
    }
    if (!(flags & NGHTTP2_HD_INFLATE_EMIT) && left == 0) return false;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nghttp2_hd_inflater* inflater;
  if (nghttp2_hd_inflate_new(&inflater) != 0) return 0;
  shim::relay::HpackDecoder decoder;
  size_t at = 0;
  Headers headers;  // reused from block to block, as a connection does
  for (int block_number = 0; at + 2 <= size; ++block_number) {
    size_t length = std::min<size_t>(size_t{data[at]} << 8 | data[at + 1], size - at - 2);
    const uint8_t* block = data + at + 2;
    at += 2 + length;

    Headers expected;
    size_t expected_size = 0;
    bool accepted = ReferenceDecode(inflater, block, length, expected, expected_size);
    size_t list_size = 0;
    const char* error = decoder.Decode(block, length, kMaxList, headers, list_size);
    FUZZ_CHECK(accepted == (error == nullptr), "block %d: libnghttp2 %s it, the shim %s (%s)",
               block_number, accepted ? "accepts" : "refuses", error ? "refuses" : "accepts",
               error ? error : "");
    if (!accepted) break;
    FUZZ_CHECK(list_size == expected_size, "block %d: list size %zu, libnghttp2's %zu",
               block_number, list_size, expected_size);
    FUZZ_CHECK(headers.size() == expected.size(), "block %d: %zu fields, libnghttp2 %zu",
               block_number, headers.size(), expected.size());
    for (size_t i = 0; i < headers.size(); ++i) {
      FUZZ_CHECK(headers[i].name == expected[i].name && headers[i].value == expected[i].value,
                 "block %d field %zu: \"%s\" against libnghttp2's \"%s\"", block_number, i,
                 headers[i].name.c_str(), expected[i].name.c_str());
    }
    FUZZ_CHECK(decoder.table_entries() + kStaticEntries ==
                   nghttp2_hd_inflate_get_num_table_entries(inflater),
               "block %d: %zu table entries, libnghttp2 %zu", block_number, decoder.table_entries(),
               nghttp2_hd_inflate_get_num_table_entries(inflater) - 61);
  }
  nghttp2_hd_inflate_del(inflater);
  return 0;
}
