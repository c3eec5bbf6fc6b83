// Little-endian writing and bounds-checked reading of the small binary
// records this folder puts into KvPoolDescriptor bytes fields and UCX
// active-message headers. Readers never read past the end: every Take*
// returns false on short input, and callers turn that into a status
// naming the record.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tandem::wire {

class Writer {
 public:
  void U32(uint32_t v) { Put(v, 4); }
  void U64(uint64_t v) { Put(v, 8); }
  void I32(int32_t v) { Put(static_cast<uint32_t>(v), 4); }
  // Length-prefixed (u32) bytes.
  void Bytes(std::string_view b) {
    U32(static_cast<uint32_t>(b.size()));
    out_.append(b);
  }
  std::string& str() { return out_; }

 private:
  void Put(uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool U32(uint32_t* v) {
    uint64_t x = 0;
    if (!Take(4, &x)) return false;
    *v = static_cast<uint32_t>(x);
    return true;
  }
  bool U64(uint64_t* v) { return Take(8, v); }
  bool I32(int32_t* v) {
    uint32_t x = 0;
    if (!U32(&x)) return false;
    *v = static_cast<int32_t>(x);
    return true;
  }
  // At most `max` bytes, so a corrupt length cannot ask for gigabytes.
  bool Bytes(std::string* b, uint32_t max = 1u << 24) {
    uint32_t n = 0;
    if (!U32(&n) || n > max || in_.size() < n) return false;
    b->assign(in_.substr(0, n));
    in_.remove_prefix(n);
    return true;
  }
  bool done() const { return in_.empty(); }
  size_t remaining() const { return in_.size(); }

 private:
  bool Take(int bytes, uint64_t* v) {
    if (in_.size() < static_cast<size_t>(bytes)) return false;
    *v = 0;
    for (int i = 0; i < bytes; ++i) *v |= static_cast<uint64_t>(static_cast<uint8_t>(in_[i])) << (8 * i);
    in_.remove_prefix(bytes);
    return true;
  }
  std::string_view in_;
};

}  // namespace tandem::wire
