#include "relay/grpc_wire.h"

#include <charconv>
#include <cstdio>

namespace shim::relay {

const std::string* FindHeader(const Headers& headers, std::string_view name) {
  for (const auto& h : headers) {
    if (h.name == name) return &h.value;
  }
  return nullptr;
}

int GrpcStatusOf(const Headers& headers, int missing) {
  const std::string* status = FindHeader(headers, "grpc-status");
  if (status == nullptr) return missing;
  int code;
  const char* end = status->data() + status->size();
  auto [at, error] = std::from_chars(status->data(), end, code);
  return error == std::errc() && at == end ? code : missing;
}

std::string_view GrpcCodeName(int code) {
  static constexpr std::string_view kNames[] = {"OK",
                                                "CANCELLED",
                                                "UNKNOWN",
                                                "INVALID_ARGUMENT",
                                                "DEADLINE_EXCEEDED",
                                                "NOT_FOUND",
                                                "ALREADY_EXISTS",
                                                "PERMISSION_DENIED",
                                                "RESOURCE_EXHAUSTED",
                                                "FAILED_PRECONDITION",
                                                "ABORTED",
                                                "OUT_OF_RANGE",
                                                "UNIMPLEMENTED",
                                                "INTERNAL",
                                                "UNAVAILABLE",
                                                "DATA_LOSS",
                                                "UNAUTHENTICATED"};
  if (code < 0 || code >= static_cast<int>(std::size(kNames))) return "UNKNOWN";
  return kNames[code];
}

std::string FrameMessage(std::string_view message) {
  std::string out;
  out.reserve(kMessagePrefixBytes + message.size());
  uint32_t n = static_cast<uint32_t>(message.size());
  out.push_back('\0');
  out.push_back(static_cast<char>(n >> 24));
  out.push_back(static_cast<char>(n >> 16));
  out.push_back(static_cast<char>(n >> 8));
  out.push_back(static_cast<char>(n));
  out.append(message);
  return out;
}

std::optional<std::string_view> SingleMessage(std::string_view body) {
  if (body.size() < kMessagePrefixBytes || body[0] != '\0') return std::nullopt;
  auto b = reinterpret_cast<const unsigned char*>(body.data());
  uint32_t n = (uint32_t{b[1]} << 24) | (uint32_t{b[2]} << 16) | (uint32_t{b[3]} << 8) | b[4];
  if (body.size() - kMessagePrefixBytes != n) return std::nullopt;
  return body.substr(kMessagePrefixBytes);
}

std::string PercentEncode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out.append(buf);
    }
  }
  return out;
}

std::string PercentDecode(std::string_view text) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      int hi = hex(text[i + 1]), lo = hex(text[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(text[i]);
  }
  return out;
}

Headers ResponseHeaders() {
  return {{":status", "200"}, {"content-type", "application/grpc"}};
}

Headers StatusTrailers(GrpcCode code, std::string_view message) {
  Headers h{{"grpc-status", std::to_string(static_cast<int>(code))}};
  if (!message.empty()) h.push_back({"grpc-message", PercentEncode(message)});
  return h;
}

Headers TrailersOnly(GrpcCode code, std::string_view message) {
  Headers h = ResponseHeaders();
  for (auto& t : StatusTrailers(code, message)) h.push_back(std::move(t));
  return h;
}

}  // namespace shim::relay
