// HPACK (relay/hpack.h) against an independent implementation: blocks the shim encodes must
// decode the same with libnghttp2's decoder, and blocks libnghttp2's encoder makes (dynamic
// table, Huffman, table size changes) must decode the same with the shim's decoder. Plus the
// examples of RFC 7541 Appendix C and the malformed blocks a peer could send.
#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>

#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "relay/hpack.h"

namespace {

using namespace std::string_literals;
using shim::relay::EncodeHeaderBlock;
using shim::relay::Header;
using shim::relay::Headers;
using shim::relay::HpackDecoder;

constexpr size_t kNoLimit = SIZE_MAX;
constexpr size_t kStaticEntries = 61;

const uint8_t* Bytes(std::string_view s) {
  return reinterpret_cast<const uint8_t*>(s.data());
}

std::string Show(const Headers& headers) {
  std::string out;
  for (const Header& h : headers) out += h.name + ": " + h.value.substr(0, 40) + "\n";
  return out;
}

// The headers of a block, decoded by libnghttp2's decoder with its own table.
Headers NghttpDecode(nghttp2_hd_inflater* inflater, std::string_view block) {
  Headers headers;
  const uint8_t* in = Bytes(block);
  size_t left = block.size();
  while (true) {
    nghttp2_nv nv;
    int flags = 0;
    ssize_t n = nghttp2_hd_inflate_hd2(inflater, &nv, &flags, in, left, 1);
    if (n < 0) {
      ADD_FAILURE() << "undecodable header block: " << nghttp2_strerror(static_cast<int>(n));
      return headers;
    }
    in += n;
    left -= static_cast<size_t>(n);
    if (flags & NGHTTP2_HD_INFLATE_EMIT) {
      headers.push_back({std::string(reinterpret_cast<char*>(nv.name), nv.namelen),
                         std::string(reinterpret_cast<char*>(nv.value), nv.valuelen)});
    }
    if (flags & NGHTTP2_HD_INFLATE_FINAL) break;
    if (!(flags & NGHTTP2_HD_INFLATE_EMIT) && left == 0) break;
  }
  nghttp2_hd_inflate_end_headers(inflater);
  return headers;
}

// The block libnghttp2's encoder makes of `headers` (it indexes and Huffman-codes as it sees
// fit; `never_index` fields go out as "never indexed").
std::string NghttpEncode(nghttp2_hd_deflater* deflater, const Headers& headers,
                         bool never_index = false) {
  std::vector<nghttp2_nv> nv;
  for (const Header& h : headers) {
    nv.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(h.name.data())),
                  reinterpret_cast<uint8_t*>(const_cast<char*>(h.value.data())), h.name.size(),
                  h.value.size(),
                  static_cast<uint8_t>(never_index ? NGHTTP2_NV_FLAG_NO_INDEX : 0)});
  }
  std::string block(nghttp2_hd_deflate_bound(deflater, nv.data(), nv.size()), '\0');
  ssize_t n = nghttp2_hd_deflate_hd(deflater, reinterpret_cast<uint8_t*>(block.data()),
                                    block.size(), nv.data(), nv.size());
  EXPECT_GE(n, 0) << nghttp2_strerror(static_cast<int>(n));
  block.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return block;
}

// Decodes with the shim's decoder; an error fails the test.
Headers Decode(HpackDecoder& decoder, std::string_view block) {
  Headers headers;
  size_t list_size = 0;
  const char* error = decoder.Decode(Bytes(block), block.size(), kNoLimit, headers, list_size);
  EXPECT_EQ(error, nullptr) << error;
  return headers;
}

TEST(HpackEncoder, BlocksDecodeToTheSameHeadersWithAnyDecoder) {
  Headers headers = {
      {":method", "POST"},
      {":scheme", "http"},
      {":path", "/runtime.v1.RuntimeService/Version"},
      {":authority", "/run/containerd/containerd.sock"},
      {"content-type", "application/grpc"},
      {"user-agent", "grpc-go/1.59.0"},
      {"te", "trailers"},
      {"grpc-timeout", "1999m"},
      {":method", "GET"},
      {":status", "200"},
      {":status", "404"},
      {"x-empty", ""},
      {"x-long", std::string(300, 'v')},                 // a length past the 7-bit prefix
      {std::string(200, 'n'), std::string(20000, 'w')},  // and past two more bytes
  };
  std::string block;
  EncodeHeaderBlock(headers, block);
  nghttp2_hd_inflater* inflater;
  ASSERT_EQ(nghttp2_hd_inflate_new(&inflater), 0);
  HpackDecoder ours;
  // Twice through one decoder: a block never leaves anything in the decoder's table that the
  // next one relies on.
  for (int round = 0; round < 2; ++round) {
    Headers decoded = NghttpDecode(inflater, block);
    ASSERT_EQ(Show(decoded), Show(headers)) << "round " << round;
    EXPECT_EQ(decoded.back().value, headers.back().value);
    EXPECT_EQ(nghttp2_hd_inflate_get_num_table_entries(inflater), kStaticEntries)
        << "the block added entries to the decoder's dynamic table";
    EXPECT_EQ(Show(Decode(ours, block)), Show(headers));
  }
  nghttp2_hd_inflate_del(inflater);
  // Static-table pairs take one byte each.
  std::string post;
  EncodeHeaderBlock({{":method", "POST"}, {":status", "200"}}, post);
  EXPECT_EQ(post, "\x83\x88");
}

// RFC 7541 C.2.1, C.3.1 and C.4 (requests with and without Huffman coding, on one table).
TEST(HpackDecoder, DecodesTheExamplesOfTheRfc) {
  HpackDecoder literal;
  const std::string custom =
      "\x40\x0a"
      "custom-key\x0d"
      "custom-header";
  EXPECT_EQ(Show(Decode(literal, custom)), "custom-key: custom-header\n");
  EXPECT_EQ(literal.table_entries(), 1u);
  EXPECT_EQ(Show(Decode(literal, "\xbe")), "custom-key: custom-header\n");  // index 62

  HpackDecoder plain;
  EXPECT_EQ(Show(Decode(plain,
                        "\x82\x86\x84\x41\x0f"
                        "www.example.com")),
            ":method: GET\n:scheme: http\n:path: /\n:authority: www.example.com\n");

  HpackDecoder huffman;
  const std::string first("\x82\x86\x84\x41\x8c\xf1\xe3\xc2\xe5\xf2\x3a\x6b\xa0\xab\x90\xf4\xff",
                          17);
  EXPECT_EQ(Show(Decode(huffman, first)),
            ":method: GET\n:scheme: http\n:path: /\n:authority: www.example.com\n");
  const std::string second("\x82\x86\x84\xbe\x58\x86\xa8\xeb\x10\x64\x9c\xbf", 12);
  EXPECT_EQ(Show(Decode(huffman, second)),
            ":method: GET\n:scheme: http\n:path: /\n:authority: www.example.com\n"
            "cache-control: no-cache\n");
  EXPECT_EQ(huffman.table_entries(), 2u);
}

// Every octet, through libnghttp2's Huffman coder (a rare octet among common ones keeps the
// coded string shorter than the plain one, so the encoder does use Huffman).
TEST(HpackDecoder, EveryOctetSurvivesHuffmanCoding) {
  nghttp2_hd_deflater* deflater;
  ASSERT_EQ(nghttp2_hd_deflate_new(&deflater, 4096), 0);
  HpackDecoder ours;
  for (int octet = 0; octet < 256; ++octet) {
    std::string value = std::string(40, 'a') + static_cast<char>(octet) + std::string(40, 'e');
    Headers headers = {{"x-octet", value}};
    std::string block = NghttpEncode(deflater, headers, /*never_index=*/true);
    ASSERT_LT(block.size(), value.size()) << "not Huffman-coded: octet " << octet;
    Headers decoded = Decode(ours, block);
    ASSERT_EQ(decoded.size(), 1u) << octet;
    EXPECT_EQ(decoded[0].value, value) << "octet " << octet;
  }
  nghttp2_hd_deflate_del(deflater);
}

// Many blocks of random fields through one libnghttp2 encoder and one shim decoder: indexed
// fields, literals with and without indexing, eviction, entries larger than the table, and the
// encoder's table shrinking and growing again (size updates). As on a connection, every block is
// decoded into the same vector, over the longer or shorter fields of the block before.
TEST(HpackDecoder, FollowsAnEncodersTableThroughManyBlocks) {
  std::mt19937 random(7541);
  auto pick = [&](size_t n) { return static_cast<size_t>(random() % n); };
  const std::vector<std::string> names = {
      ":path", ":authority", "content-type", "user-agent",   "grpc-timeout",
      "x-a",   "x-b",        "grpc-status",  "grpc-message", "cookie"};
  auto random_value = [&]() {
    size_t length = pick(4) == 0 ? pick(3000) : pick(40);
    std::string value;
    for (size_t i = 0; i < length; ++i) {
      value.push_back(pick(8) == 0 ? static_cast<char>(pick(256)) : "abcdefgh/._-0123"[pick(16)]);
    }
    return value;
  };

  nghttp2_hd_deflater* deflater;
  ASSERT_EQ(nghttp2_hd_deflate_new(&deflater, 4096), 0);
  HpackDecoder ours;
  const size_t table_sizes[] = {4096, 256, 0, 1000, 4096};
  size_t blocks = 0;
  Headers decoded;
  for (size_t table_size : table_sizes) {
    ASSERT_EQ(nghttp2_hd_deflate_change_table_size(deflater, table_size), 0);
    for (int i = 0; i < 300; ++i, ++blocks) {
      Headers headers;
      size_t fields = 1 + pick(12);
      for (size_t f = 0; f < fields; ++f) {
        std::string name =
            pick(5) == 0 ? "x-" + std::to_string(pick(50)) : names[pick(names.size())];
        headers.push_back({name, pick(3) == 0 ? std::string("repeated") : random_value()});
      }
      std::string block = NghttpEncode(deflater, headers, /*never_index=*/pick(10) == 0);
      size_t list_size = 0;
      ASSERT_EQ(ours.Decode(Bytes(block), block.size(), kNoLimit, decoded, list_size), nullptr)
          << "block " << blocks;
      ASSERT_EQ(decoded.size(), headers.size()) << "block " << blocks;
      for (size_t f = 0; f < headers.size(); ++f) {
        ASSERT_EQ(decoded[f].name, headers[f].name) << "block " << blocks << " field " << f;
        ASSERT_EQ(decoded[f].value, headers[f].value) << "block " << blocks << " field " << f;
      }
      ASSERT_EQ(ours.table_entries() + kStaticEntries,
                nghttp2_hd_deflate_get_num_table_entries(deflater))
          << "block " << blocks;
    }
  }
  nghttp2_hd_deflate_del(deflater);
}

// RFC 7541 4.4: a literal may name an entry that its own insertion evicts.
TEST(HpackDecoder, ALiteralMayNameTheEntryItsInsertionEvicts) {
  HpackDecoder ours;
  // Table size 64 (31 + 33): room for one 36-byte entry.
  Decode(ours,
         "\x3f\x21\x40\x02"
         "aa\x02"
         "bb");
  ASSERT_EQ(ours.table_entries(), 1u);
  // Name: index 62 ("aa"); adding "aa: cc" evicts "aa: bb" first.
  EXPECT_EQ(Show(Decode(ours,
                        "\x7e\x02"
                        "cc")),
            "aa: cc\n");
  EXPECT_EQ(Show(Decode(ours, "\xbe")), "aa: cc\n");
  EXPECT_EQ(ours.table_entries(), 1u);
  // An entry larger than the whole table empties it and is not added (the field still counts).
  EXPECT_EQ(Decode(ours, "\x40\x01x\x3f" + std::string(63, 'y')).size(), 1u);
  EXPECT_EQ(ours.table_entries(), 0u);
}

// Large entries cycled through the table (each evicting the one before) leave the ring holding
// about the table's size, not the room of every value that passed through.
TEST(HpackDecoder, EvictedLargeEntriesGiveTheirRoomBack) {
  HpackDecoder ours;
  const std::string large(3000, 'v');
  for (int i = 0; i < 300; ++i) {
    std::string name = "x-" + std::to_string(i);
    // Literal with incremental indexing, new name; a 3000-byte value (length in 7+ bits).
    std::string block = "\x40" + std::string(1, static_cast<char>(name.size())) + name + "\x7f";
    for (size_t rest = large.size() - 127; rest >= 128; rest >>= 7) {
      block.push_back(static_cast<char>(0x80 | (rest & 0x7f)));
    }
    block.push_back(static_cast<char>((large.size() - 127) >> 7));
    block += large;
    Headers decoded = Decode(ours, block);
    ASSERT_EQ(decoded.size(), 1u);
    ASSERT_EQ(decoded[0].value.size(), large.size());
    ASSERT_EQ(ours.table_entries(), 1u) << "each entry evicts the one before";
  }
  // One live entry (about 3 KB, with the string's slack) and the evicted ones' kept room.
  EXPECT_LE(ours.retained_room(), 2 * large.size() + 129 * 2 * (HpackDecoder::kKeptRoom + 1));
  // Small entries keep their room: the next ones reuse it.
  for (int i = 0; i < 300; ++i)
    Decode(ours,
           "\x40\x01"
           "a\x05"
           "small");
  EXPECT_EQ(ours.table_entries(), 4096u / 38);
}

TEST(HpackDecoder, AListOverTheLimitIsDroppedButStillIndexed) {
  HpackDecoder ours;
  std::string block;
  for (char c : std::string("abc"))
    block += std::string("\x40\x01") + c + "\x28" + std::string(40, c);
  Headers headers = {{"stale", "from an earlier block"}};
  size_t list_size = 0;
  ASSERT_EQ(ours.Decode(Bytes(block), block.size(), 100, headers, list_size), nullptr);
  EXPECT_TRUE(headers.empty()) << Show(headers);
  EXPECT_EQ(list_size, 3u * (1 + 40 + 32));
  // The table saw all three fields: the next block, within the limit, uses them.
  EXPECT_EQ(ours.table_entries(), 3u);
  ASSERT_EQ(ours.Decode(Bytes("\xbe"), 1, 100, headers, list_size), nullptr);
  EXPECT_EQ(Show(headers), "c: " + std::string(40, 'c') + "\n");
}

TEST(HpackDecoder, RefusesMalformedBlocks) {
  struct Case {
    std::string block;
    const char* what;
  };
  const Case cases[] = {
      {std::string("\x80", 1), "index 0"},
      {"\xbe", "an index beyond the static table with an empty dynamic table"},
      {"\xff\x80\x80\x80\x80\x80\x01", "an index over 32 bits"},
      {"\xff", "an index cut off"},
      {"\x00\x05"
       "ab"s,
       "a string longer than the block"},
      {"\x00"s, "a block that ends before the name"},
      {"\x00\x01"
       "a"s,
       "a block that ends before the value"},
      {"\x40\x01"
       "a\x84\xff\xff\xff\xff",
       "EOS inside a Huffman string"},
      {"\x40\x01"
       "a\x81\xff",
       "Huffman padding of 8 bits"},
      {"\x40\x01"
       "a\x81\x18",
       "Huffman padding that is not all ones"},
      {"\x82\x20", "a table size update after a field"},
      {"\x3f\xe2\x1f", "a table size over the 4096 announced"},
      {"\x7f\x00\x01"
       "a"s,
       "a name index beyond the tables"},
  };
  for (const Case& c : cases) {
    HpackDecoder ours;
    Headers headers;
    size_t list_size = 0;
    EXPECT_NE(ours.Decode(Bytes(c.block), c.block.size(), kNoLimit, headers, list_size), nullptr)
        << c.what;
  }
  // Their valid neighbours.
  HpackDecoder ours;
  EXPECT_EQ(Show(Decode(ours,
                        "\x40\x01"
                        "a\x81\x1f")),
            "a: a\n");  // 'a' (00011) and three bits of padding
  EXPECT_EQ(Show(Decode(ours, "\x3f\xe1\x1f\x82")), ":method: GET\n");  // size 4096
}

}  // namespace
