#include "common/model/safetensors_writer.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

// Checks what the header will claim against the bytes that follow it, so
// the writer never produces a file its own reader rejects.
absl::Status CheckTensors(const std::string& path, const std::vector<HostTensor>& tensors) {
  std::set<std::string> names;
  for (const HostTensor& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__") {
      return absl::InvalidArgumentError(absl::StrCat(path, ": invalid tensor name '", t.name, "'"));
    }
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", t.name, "' is given twice"));
    }
    for (int64_t d : t.shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": tensor '", t.name, "' has a negative dimension"));
      }
    }
    const uint64_t want = static_cast<uint64_t>(t.numel()) * DTypeSize(t.dtype);
    if (t.nbytes != want) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", t.name, "' holds ", t.nbytes,
                                                     " bytes but its shape and dtype need ", want));
    }
    if (t.nbytes > 0 && t.data == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", t.name, "' has no data"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteSafetensors(const std::string& path, const std::vector<HostTensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  if (absl::Status s = CheckTensors(path, tensors); !s.ok()) return s;
  // nlohmann::ordered_json keeps the tensors in the order given.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const HostTensor& t : tensors) {
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  // A name unique per process and call, so concurrent writers of the same
  // path never share a temporary file.
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid(), ".", counter++);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::InternalError(absl::StrCat(path, ": cannot create ", tmp));
    const uint64_t len = text.size();
    char len_bytes[8];
    for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<char>((len >> (8 * i)) & 0xff);
    out.write(len_bytes, 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const HostTensor& t : tensors) {
      out.write(reinterpret_cast<const char*>(t.data), static_cast<std::streamsize>(t.nbytes));
    }
    out.flush();
    if (!out) {
      out.close();
      std::remove(tmp.c_str());
      return absl::InternalError(absl::StrCat(path, ": error writing ", tmp));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat(path, ": cannot rename ", tmp, " into place"));
  }
  return absl::OkStatus();
}

}  // namespace tandem
