#include "common/model/safetensors_reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

// Owns one read-only mapping of a whole file.
class Mapping {
 public:
  Mapping(void* data, size_t size) : data_(data), size_(size) {}
  ~Mapping() {
    if (data_ != nullptr && size_ > 0) munmap(data_, size_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  const std::byte* bytes() const { return static_cast<const std::byte*>(data_); }
  size_t size() const { return size_; }

 private:
  void* data_;
  size_t size_;
};

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status Bad(const std::string& path, std::string_view problem) {
  return absl::DataLossError(absl::StrCat(path, ": ", std::string(problem)));
}

absl::StatusOr<DType> ParseDType(const std::string& s) {
  if (s == "F32") return DType::kF32;
  if (s == "F16") return DType::kF16;
  if (s == "BF16") return DType::kBF16;
  return absl::InvalidArgumentError(s);
}

}  // namespace

absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", strerror(errno)));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return absl::InternalError(absl::StrCat(path, ": cannot stat: ", strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    close(fd);
    return Bad(path, absl::StrCat("file of ", size, " bytes is too short for a safetensors header"));
  }
  void* data = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_errno = errno;
  close(fd);  // the mapping keeps the file's pages reachable on its own
  if (data == MAP_FAILED) {
    return absl::InternalError(absl::StrCat(path, ": mmap failed: ", strerror(mmap_errno)));
  }
  auto mapping = std::make_shared<Mapping>(data, size);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(mapping->bytes()[i]);
  if (header_len > size - 8) {
    return Bad(path, absl::StrCat("truncated header: it claims ", header_len, " bytes but the file has ",
                                  size - 8, " after the length"));
  }
  const char* header = reinterpret_cast<const char*>(mapping->bytes() + 8);
  nlohmann::json j = nlohmann::json::parse(header, header + header_len, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Bad(path, "header is not a valid JSON object");

  SafetensorsFile file;
  file.path = path;
  const size_t data_begin = 8 + header_len;
  const size_t data_size = size - data_begin;
  for (auto& [name, entry] : j.items()) {
    if (name == "__metadata__") {
      if (entry.is_object()) {
        for (auto& [k, v] : entry.items()) {
          if (v.is_string()) file.metadata[k] = v.get<std::string>();
        }
      }
      continue;
    }
    const std::string where = absl::StrCat("tensor '", name, "'");
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets")) {
      return Bad(path, absl::StrCat(where, " lacks dtype, shape or data_offsets"));
    }
    if (!entry["dtype"].is_string()) return Bad(path, absl::StrCat(where, ": dtype is not a string"));
    absl::StatusOr<DType> dtype = ParseDType(entry["dtype"].get<std::string>());
    if (!dtype.ok()) {
      return absl::UnimplementedError(absl::StrCat(path, ": ", where, " has dtype ",
                                                   entry["dtype"].get<std::string>(),
                                                   ", not one of F32, F16, BF16"));
    }
    HostTensor t;
    t.name = name;
    t.dtype = *dtype;
    t.source = path;
    // numel is bounded by the file size as it grows, so a hostile shape
    // cannot overflow the byte count checked below.
    uint64_t numel = 1;
    bool too_big = false;
    if (!entry["shape"].is_array()) return Bad(path, absl::StrCat(where, ": shape is not a list"));
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
        return Bad(path, absl::StrCat(where, ": shape holds a negative or non-integer size"));
      }
      const uint64_t dim = d.get<uint64_t>();
      t.shape.push_back(static_cast<int64_t>(dim));
      if (dim != 0 && numel > data_size / dim) too_big = true;
      numel = too_big ? 0 : numel * dim;
    }
    const auto& off = entry["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return Bad(path, absl::StrCat(where, ": data_offsets must be two non-negative integers"));
    }
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return Bad(path, absl::StrCat(where, ": data_offsets [", begin, ", ", end,
                                    ") fall outside the data section of ", data_size,
                                    " bytes (is the file truncated?)"));
    }
    // A zero dimension anywhere makes the tensor empty however large the
    // others are.
    const bool empty = std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end();
    if (too_big && !empty) {
      return Bad(path, absl::StrCat(where, ": shape ", ShapeString(t.shape),
                                    " needs more bytes than the data section holds (", data_size, ")"));
    }
    const uint64_t expected = empty ? 0 : numel * DTypeSize(t.dtype);
    if (end - begin != expected) {
      return Bad(path, absl::StrCat(where, ": data_offsets span ", end - begin, " bytes but shape and dtype need ",
                                    expected));
    }
    t.data = mapping->bytes() + data_begin + begin;
    t.nbytes = expected;
    t.keepalive = mapping;
    file.tensors.emplace(name, std::move(t));
  }
  return file;
}

}  // namespace tandem
