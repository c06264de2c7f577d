#include "relay/hpack.h"

#include <string_view>

namespace shim::relay {

namespace {

// Static-table entries (RFC 7541 Appendix A) of the fields gRPC sends. A name without a value
// here matches any value: the field is then a literal with an indexed name.
struct StaticEntry {
  std::string_view name;
  std::string_view value;
  uint8_t index;
};
constexpr StaticEntry kStaticFields[] = {
    {":authority", {}, 1},  {":method", "POST", 3},  {":method", "GET", 2},
    {":method", {}, 2},     {":path", "/", 4},       {":path", {}, 4},
    {":scheme", "http", 6}, {":scheme", "https", 7}, {":scheme", {}, 6},
    {":status", "200", 8},  {":status", {}, 8},      {"content-type", {}, 31},
    {"user-agent", {}, 58},
};

// An integer with an N-bit prefix (RFC 7541 5.1); `first` holds the bits above the prefix.
void AppendInteger(std::string& out, uint8_t first, int prefix_bits, size_t value) {
  const size_t max_prefix = (size_t{1} << prefix_bits) - 1;
  if (value < max_prefix) {
    out.push_back(static_cast<char>(first | value));
    return;
  }
  out.push_back(static_cast<char>(first | max_prefix));
  value -= max_prefix;
  while (value >= 128) {
    out.push_back(static_cast<char>(0x80 | (value & 0x7f)));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

// A string literal without Huffman coding (RFC 7541 5.2).
void AppendString(std::string& out, std::string_view text) {
  AppendInteger(out, 0x00, 7, text.size());
  out.append(text);
}

}  // namespace

void EncodeHeaderBlock(const Headers& headers, std::string& out) {
  for (const Header& h : headers) {
    uint8_t name_index = 0;
    bool whole_field = false;
    if (h.name.size() > 1 && (h.name[0] == ':' || h.name[0] == 'c' || h.name[0] == 'u')) {
      for (const StaticEntry& entry : kStaticFields) {
        if (entry.name != h.name) continue;
        if (entry.value.empty() || entry.value == h.value) {
          name_index = entry.index;
          whole_field = !entry.value.empty();
          break;
        }
      }
    }
    if (whole_field) {
      AppendInteger(out, 0x80, 7, name_index);  // indexed field (6.1)
      continue;
    }
    // Literal without indexing (6.2.2): the peer's table is never touched.
    AppendInteger(out, 0x00, 4, name_index);
    if (name_index == 0) AppendString(out, h.name);
    AppendString(out, h.value);
  }
}

}  // namespace shim::relay
