// GPT-2's reversible map between bytes and printable Unicode characters,
// which byte-level BPE vocabularies (Llama 3, Qwen) are written in.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tandem {

// The UTF-8 of the character byte `b` maps to (e.g. ' ' -> "Ġ").
const std::string& ByteToUnicode(uint8_t b);
// Maps every byte of `bytes` to its character.
std::string BytesToByteLevel(std::string_view bytes);
// The byte a character stands for; nullopt for characters outside the map.
std::optional<uint8_t> UnicodeToByte(char32_t c);

// UTF-8 helpers shared by the tokenizer files.
// Length of the UTF-8 sequence starting with `lead` (1 for invalid leads).
int Utf8SequenceLength(uint8_t lead);
// Decodes the code point at s[i] (advancing i); invalid bytes yield U+FFFD.
char32_t DecodeUtf8(std::string_view s, size_t& i);
void AppendUtf8(char32_t c, std::string* out);
// `s` with every byte that is not part of valid UTF-8 replaced by U+FFFD
// (what decoding with errors="replace" gives).
std::string SanitizeUtf8(std::string_view s);
// Length of the longest prefix of `s` that is valid UTF-8.
size_t ValidUtf8PrefixLength(std::string_view s);
// Bytes at the end of `s` that start an incomplete UTF-8 sequence.
size_t IncompleteUtf8Suffix(std::string_view s);

}  // namespace tandem
