#include "relay/hpack.h"

#include <array>
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

// --- Decoding -----------------------------------------------------------------------------

// The static table (RFC 7541 Appendix A), index 1 first.
const Header kStaticTable[] = {
    {":authority", ""},
    {":method", "GET"},
    {":method", "POST"},
    {":path", "/"},
    {":path", "/index.html"},
    {":scheme", "http"},
    {":scheme", "https"},
    {":status", "200"},
    {":status", "204"},
    {":status", "206"},
    {":status", "304"},
    {":status", "400"},
    {":status", "404"},
    {":status", "500"},
    {"accept-charset", ""},
    {"accept-encoding", "gzip, deflate"},
    {"accept-language", ""},
    {"accept-ranges", ""},
    {"accept", ""},
    {"access-control-allow-origin", ""},
    {"age", ""},
    {"allow", ""},
    {"authorization", ""},
    {"cache-control", ""},
    {"content-disposition", ""},
    {"content-encoding", ""},
    {"content-language", ""},
    {"content-length", ""},
    {"content-location", ""},
    {"content-range", ""},
    {"content-type", ""},
    {"cookie", ""},
    {"date", ""},
    {"etag", ""},
    {"expect", ""},
    {"expires", ""},
    {"from", ""},
    {"host", ""},
    {"if-match", ""},
    {"if-modified-since", ""},
    {"if-none-match", ""},
    {"if-range", ""},
    {"if-unmodified-since", ""},
    {"last-modified", ""},
    {"link", ""},
    {"location", ""},
    {"max-forwards", ""},
    {"proxy-authenticate", ""},
    {"proxy-authorization", ""},
    {"range", ""},
    {"referer", ""},
    {"refresh", ""},
    {"retry-after", ""},
    {"server", ""},
    {"set-cookie", ""},
    {"strict-transport-security", ""},
    {"transfer-encoding", ""},
    {"user-agent", ""},
    {"vary", ""},
    {"via", ""},
    {"www-authenticate", ""},
};
constexpr size_t kStaticEntries = std::size(kStaticTable);
static_assert(kStaticEntries == 61);

// The length in bits of each symbol's Huffman code (RFC 7541 Appendix B), bytes 0-255 and EOS.
// The code is canonical: codes of one length are consecutive in symbol order and follow the
// shorter ones, so the lengths alone define it.
constexpr uint8_t kHuffmanLength[257] = {
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,  // 0x00
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,  // 0x10
    6,  10, 10, 12, 13, 6,  8,  11, 10, 10, 8,  11, 8,  6,  6,  6,   // 0x20 ' '
    5,  5,  5,  6,  6,  6,  6,  6,  6,  6,  7,  8,  15, 6,  12, 10,  // 0x30 '0'
    13, 6,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,   // 0x40 '@'
    7,  7,  7,  7,  7,  7,  7,  7,  8,  7,  8,  13, 19, 13, 14, 6,   // 0x50 'P'
    15, 5,  6,  5,  6,  5,  6,  6,  6,  5,  7,  7,  6,  6,  6,  5,   // 0x60 '`'
    6,  7,  6,  5,  5,  6,  7,  7,  7,  7,  7,  15, 11, 14, 13, 28,  // 0x70 'p'
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,  // 0x80
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,  // 0x90
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,  // 0xa0
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,  // 0xb0
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,  // 0xc0
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,  // 0xd0
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,  // 0xe0
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,  // 0xf0
    30,                                                              // EOS
};
constexpr int kEos = 256;
constexpr int kLongestCode = 30;

// The decoding tables of the canonical code, made at compile time from the lengths.
struct HuffmanTables {
  std::array<uint16_t, 257> by_code{};  // symbols in code order (by length, then symbol)
  std::array<uint32_t, kLongestCode + 1> first_code{};  // of each length
  std::array<uint16_t, kLongestCode + 1> count{};       // codes of each length
  std::array<uint16_t, kLongestCode + 1> first_rank{};  // in by_code
  // By the next 8 bits: symbol << 4 | length for a code of at most 8 bits starting there (the
  // letters, digits and punctuation of header values), 0 for a longer one.
  std::array<uint16_t, 256> short_code{};
};

constexpr HuffmanTables MakeHuffmanTables() {
  HuffmanTables t;
  for (uint8_t length : kHuffmanLength) ++t.count[length];
  uint16_t rank = 0;
  uint32_t code = 0;
  for (int length = 1; length <= kLongestCode; ++length) {
    t.first_rank[length] = rank;
    rank += t.count[length];
    t.first_code[length] = code;
    code = (code + t.count[length]) << 1;
  }
  std::array<uint16_t, kLongestCode + 1> next = t.first_rank;
  for (int symbol = 0; symbol <= kEos; ++symbol) {
    t.by_code[next[kHuffmanLength[symbol]]++] = static_cast<uint16_t>(symbol);
  }
  for (int length = 1; length <= 8; ++length) {
    for (uint32_t i = 0; i < t.count[length]; ++i) {
      uint32_t prefix = (t.first_code[length] + i) << (8 - length);
      uint16_t symbol = t.by_code[t.first_rank[length] + i];
      for (uint32_t rest = 0; rest < (1u << (8 - length)); ++rest) {
        t.short_code[prefix | rest] = static_cast<uint16_t>(symbol << 4 | length);
      }
    }
  }
  return t;
}
constexpr HuffmanTables kHuffman = MakeHuffmanTables();
// The lengths make a complete code (the EOS code is the last, thirty ones).
static_assert(kHuffman.first_code[kLongestCode] + kHuffman.count[kLongestCode] == 1u << 30);
static_assert(kHuffman.by_code[256] == kEos);

// Appends the Huffman-coded string at `p` (5.2) to `out`. False when it holds EOS, or ends in
// anything but the start of EOS shorter than a byte.
bool HuffmanDecode(const uint8_t* p, size_t n, std::string& out) {
  const uint8_t* end = p + n;
  out.clear();
  out.reserve(n * 8 / 5);  // the shortest code has 5 bits
  uint64_t bits = 0;       // the next bits, from the top
  int have = 0;
  while (true) {
    while (have <= 56 && p < end) {
      bits |= uint64_t{*p++} << (56 - have);
      have += 8;
    }
    if (have == 0) return true;
    uint16_t short_code = kHuffman.short_code[bits >> 56];
    int length = short_code & 15;
    int symbol;
    if (length != 0) {
      if (length > have) break;
      symbol = short_code >> 4;
    } else {
      // Longer codes are rare in header values: find the length whose codes hold the bits.
      for (length = 9;; ++length) {
        if (length > have) break;
        uint32_t code = static_cast<uint32_t>(bits >> (64 - length));
        if (code - kHuffman.first_code[length] < kHuffman.count[length]) break;
      }
      if (length > have) break;
      uint32_t code = static_cast<uint32_t>(bits >> (64 - length));
      symbol = kHuffman.by_code[kHuffman.first_rank[length] + (code - kHuffman.first_code[length])];
      if (symbol == kEos) return false;
    }
    out.push_back(static_cast<char>(symbol));
    bits <<= length;
    have -= length;
  }
  // What is left is padding: under 8 bits, all ones.
  return have < 8 && bits == ~uint64_t{0} << (64 - have);
}

// An integer with an N-bit prefix (5.1) at `p`, which is before `end`. False when the block ends
// inside it or it does not fit in 32 bits.
bool ReadInteger(const uint8_t*& p, const uint8_t* end, int prefix_bits, uint32_t& value) {
  const uint32_t max_prefix = (1u << prefix_bits) - 1;
  value = *p++ & max_prefix;
  if (value < max_prefix) return true;
  uint64_t sum = value;
  for (int shift = 0; p < end && shift <= 28; shift += 7) {
    uint8_t b = *p++;
    sum += uint64_t{b & 0x7fu} << shift;
    if (sum > UINT32_MAX) return false;
    if (!(b & 0x80)) {
      value = static_cast<uint32_t>(sum);
      return true;
    }
  }
  return false;
}

// A string literal (5.2) at `p`, into `out`.
const char* ReadString(const uint8_t*& p, const uint8_t* end, std::string& out) {
  if (p == end) return "the block ends before a string";
  bool huffman = *p & 0x80;
  uint32_t length;
  if (!ReadInteger(p, end, 7, length)) return "a bad string length";
  if (length > static_cast<size_t>(end - p)) return "a string longer than the block";
  if (huffman) {
    if (!HuffmanDecode(p, length, out)) return "a bad Huffman string";
  } else {
    out.assign(reinterpret_cast<const char*>(p), length);
  }
  p += length;
  return nullptr;
}

size_t EntrySize(const Header& field) {
  return field.name.size() + field.value.size() + 32;
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

HpackDecoder::HpackDecoder(size_t table_size_limit)
    : limit_(table_size_limit), max_size_(table_size_limit) {}

const char* HpackDecoder::Decode(const uint8_t* p, size_t length, size_t max_list_size,
                                 Headers& headers, size_t& list_size) {
  const uint8_t* end = p + length;
  list_size = 0;
  size_t kept = 0;  // fields of this block in `headers`; the elements past them are room
  bool field_seen = false;
  while (p < end) {
    const uint8_t kind = *p;
    if ((kind & 0xe0) == 0x20) {
      // Dynamic table size update (6.3): only before the block's first field (4.2).
      if (field_seen) return "a table size update after a field";
      uint32_t size;
      if (!ReadInteger(p, end, 5, size)) return "a bad table size";
      if (size > limit_) return "a table size over SETTINGS_HEADER_TABLE_SIZE";
      max_size_ = size;
      EvictTo(size);
      continue;
    }
    field_seen = true;
    // Assigning into an element kept from an earlier block reuses its strings' room.
    Header& field = kept < headers.size() ? headers[kept] : headers.emplace_back();
    if (kind & 0x80) {
      // Indexed field (6.1).
      uint32_t index;
      if (!ReadInteger(p, end, 7, index)) return "a bad index";
      const Header* found = Field(index);
      if (found == nullptr) return "an index beyond the tables";
      field.name.assign(found->name);
      field.value.assign(found->value);
    } else {
      // Literal (6.2): with incremental indexing (01), without (0000), never indexed (0001).
      const bool add_to_table = kind & 0x40;
      uint32_t name_index;
      if (!ReadInteger(p, end, add_to_table ? 6 : 4, name_index)) return "a bad name index";
      if (name_index != 0) {
        const Header* named = Field(name_index);
        if (named == nullptr) return "a name index beyond the tables";
        field.name.assign(named->name);
      } else if (const char* error = ReadString(p, end, field.name)) {
        return error;
      }
      if (const char* error = ReadString(p, end, field.value)) return error;
      if (add_to_table) Insert(field);
    }
    list_size += EntrySize(field);
    // Over the limit, the fields are dropped as they come (the slot is overwritten by the next).
    if (list_size <= max_list_size) ++kept;
  }
  headers.resize(kept);
  if (list_size > max_list_size) headers.clear();
  return nullptr;
}

const Header* HpackDecoder::Field(uint32_t index) const {
  if (index == 0) return nullptr;
  if (index <= kStaticEntries) return &kStaticTable[index - 1];
  size_t age = index - kStaticEntries - 1;
  if (age >= count_) return nullptr;
  return &ring_[(newest_ + age) % ring_.size()];
}

void HpackDecoder::Insert(const Header& field) {
  const size_t size = EntrySize(field);
  if (size > max_size_) {
    EvictTo(0);  // an entry larger than the table empties it (4.4)
    return;
  }
  EvictTo(max_size_ - size);
  if (ring_.empty()) ring_.resize(limit_ / 32 + 1);
  newest_ = (newest_ + ring_.size() - 1) % ring_.size();
  ring_[newest_].name.assign(field.name);
  ring_[newest_].value.assign(field.value);
  ++count_;
  size_ += size;
}

void HpackDecoder::EvictTo(size_t size) {
  while (size_ > size) {
    Header& oldest = ring_[(newest_ + count_ - 1) % ring_.size()];
    size_ -= EntrySize(oldest);
    --count_;
    // The room stays for the entry that replaces this one, unless it is more than ordinary
    // fields need: whatever large values passed through, the ring then holds little beyond the
    // table's own bytes.
    if (oldest.name.capacity() > kKeptRoom) std::string().swap(oldest.name);
    if (oldest.value.capacity() > kKeptRoom) std::string().swap(oldest.value);
  }
}

size_t HpackDecoder::retained_room() const {
  size_t room = 0;
  for (const Header& entry : ring_) room += entry.name.capacity() + entry.value.capacity();
  return room;
}

}  // namespace shim::relay
