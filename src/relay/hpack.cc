#include "relay/hpack.h"

#include <cstring>
#include <string_view>

namespace shim::relay {

namespace {

// An integer with an N-bit prefix (RFC 7541 5.1) at `p`; `first` holds the bits above the
// prefix. Returns the end.
char* PutInteger(char* p, uint8_t first, int prefix_bits, size_t value) {
  const size_t max_prefix = (size_t{1} << prefix_bits) - 1;
  if (value < max_prefix) {
    *p++ = static_cast<char>(first | value);
    return p;
  }
  *p++ = static_cast<char>(first | max_prefix);
  value -= max_prefix;
  while (value >= 128) {
    *p++ = static_cast<char>(0x80 | (value & 0x7f));
    value >>= 7;
  }
  *p++ = static_cast<char>(value);
  return p;
}

// A string literal without Huffman coding (RFC 7541 5.2).
char* PutString(char* p, std::string_view text) {
  p = PutInteger(p, 0x00, 7, text.size());
  std::memcpy(p, text.data(), text.size());
  return p + text.size();
}

// The static-table index (RFC 7541 Appendix A) of the field, name and value, or else of its
// name; 0 if neither is there. Only the names gRPC sends are looked up: any other is written
// out, which is as valid.
uint8_t StaticIndex(const Header& h, bool* whole_field) {
  *whole_field = false;
  const std::string& name = h.name;
  const std::string& value = h.value;
  switch (name.size()) {
    case 5:
      if (name == ":path") {
        *whole_field = value == "/";
        return 4;
      }
      return 0;
    case 7:
      if (name == ":method") {
        if (value == "POST") {
          *whole_field = true;
          return 3;
        }
        *whole_field = value == "GET";
        return 2;
      }
      if (name == ":status") {
        *whole_field = value == "200";
        return 8;
      }
      if (name == ":scheme") {
        if (value == "https") {
          *whole_field = true;
          return 7;
        }
        *whole_field = value == "http";
        return 6;
      }
      return 0;
    case 10:
      if (name == ":authority") return 1;
      if (name == "user-agent") return 58;
      return 0;
    case 12:
      return name == "content-type" ? 31 : 0;
    default:
      return 0;
  }
}

}  // namespace

void EncodeHeaderBlock(const Headers& headers, std::string& out) {
  // Room for the worst case (a 10-byte length per string, one byte of type), written through a
  // pointer and trimmed once: appending byte by byte cost more than the rest of the encoding.
  size_t bound = 0;
  for (const Header& h : headers) bound += 1 + 10 + h.name.size() + 10 + h.value.size();
  size_t start = out.size();
  out.resize(start + bound);
  char* p = out.data() + start;
  for (const Header& h : headers) {
    bool whole_field;
    uint8_t index = StaticIndex(h, &whole_field);
    if (whole_field) {
      p = PutInteger(p, 0x80, 7, index);  // indexed field (6.1)
      continue;
    }
    // Literal without indexing (6.2.2): the peer's table is never touched.
    p = PutInteger(p, 0x00, 4, index);
    if (index == 0) p = PutString(p, h.name);
    p = PutString(p, h.value);
  }
  out.resize(static_cast<size_t>(p - out.data()));
}

}  // namespace shim::relay
