#include "common/tokenizer/byte_level.h"

#include <array>
#include <unordered_map>

namespace tandem {
namespace {

struct ByteMaps {
  std::array<std::string, 256> to_unicode;
  std::unordered_map<char32_t, uint8_t> to_byte;
  ByteMaps() {
    // Printable Latin-1 bytes map to themselves; the others (control
    // characters, space, ...) to 256, 257, ... in byte order.
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const char32_t c = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      AppendUtf8(c, &to_unicode[b]);
      to_byte[c] = static_cast<uint8_t>(b);
    }
  }
};

const ByteMaps& Maps() {
  static const ByteMaps* maps = new ByteMaps();
  return *maps;
}

}  // namespace

const std::string& ByteToUnicode(uint8_t b) { return Maps().to_unicode[b]; }

std::string BytesToByteLevel(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) out += Maps().to_unicode[b];
  return out;
}

std::optional<uint8_t> UnicodeToByte(char32_t c) {
  auto it = Maps().to_byte.find(c);
  if (it == Maps().to_byte.end()) return std::nullopt;
  return it->second;
}

int Utf8SequenceLength(uint8_t lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

char32_t DecodeUtf8(std::string_view s, size_t& i) {
  const uint8_t lead = static_cast<uint8_t>(s[i]);
  const int n = Utf8SequenceLength(lead);
  if (n == 1) {
    ++i;
    return lead < 0x80 ? lead : 0xFFFD;
  }
  if (i + n > s.size()) {
    ++i;
    return 0xFFFD;
  }
  char32_t c = lead & (0x7F >> n);
  for (int k = 1; k < n; ++k) {
    const uint8_t b = static_cast<uint8_t>(s[i + k]);
    if ((b >> 6) != 0x2) {
      ++i;
      return 0xFFFD;
    }
    c = (c << 6) | (b & 0x3F);
  }
  i += n;
  return c;
}

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

namespace {

// Decodes the character at s[i] (advancing i); false if it is not valid
// UTF-8 (including overlong forms and surrogates).
bool NextValidChar(std::string_view s, size_t& i) {
  const size_t start = i;
  const char32_t c = DecodeUtf8(s, i);
  const size_t n = i - start;
  return !((c == 0xFFFD && !(n == 3 && s.compare(start, 3, "\xEF\xBF\xBD") == 0)) ||
           (c >= 0xD800 && c <= 0xDFFF) || c > 0x10FFFF || (n == 2 && c < 0x80) || (n == 3 && c < 0x800) ||
           (n == 4 && c < 0x10000));
}

}  // namespace

size_t ValidUtf8PrefixLength(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t next = i;
    if (!NextValidChar(s, next)) break;
    i = next;
  }
  return i;
}

std::string SanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const bool invalid = !NextValidChar(s, i);
    const size_t n = i - start;
    if (invalid) {
      AppendUtf8(0xFFFD, &out);
    } else {
      out.append(s.substr(start, n));
    }
  }
  return out;
}

size_t IncompleteUtf8Suffix(std::string_view s) {
  // Look back at most 3 bytes for a lead byte whose sequence runs past the end.
  for (size_t back = 1; back <= std::min<size_t>(3, s.size()); ++back) {
    const uint8_t b = static_cast<uint8_t>(s[s.size() - back]);
    if ((b >> 6) == 0x2) continue;  // continuation byte
    const int n = Utf8SequenceLength(b);
    return n > static_cast<int>(back) ? back : 0;
  }
  return 0;
}

}  // namespace tandem
