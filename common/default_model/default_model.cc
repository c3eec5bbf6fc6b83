#include "common/default_model/default_model.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/default_model/default_model_files.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

absl::Status WriteFile(const fs::path& path, std::string_view text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(text.data(), static_cast<std::streamsize>(text.size()));
  f.close();
  if (!f) return absl::InternalError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

std::string CacheRoot() {
  if (const char* d = std::getenv("TANDEM_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return absl::StrCat(d, "/tandem");
  if (const char* d = std::getenv("HOME"); d && *d) return absl::StrCat(d, "/.cache/tandem");
  return "/tmp/tandem-cache";
}

}  // namespace

absl::Status WriteDefaultModel(const std::string& dir) {
  const fs::path out(dir);
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  for (const DefaultModelFile& f : DefaultModelFiles()) {
    TANDEM_RETURN_IF_ERROR(WriteFile(out / f.name, f.bytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> EnsureDefaultModel() {
  const fs::path dir =
      fs::path(CacheRoot()) / absl::StrCat("default-model-v", kDefaultModelVersion);
  if (fs::exists(dir / "config.json") && fs::exists(dir / "model.safetensors") &&
      fs::exists(dir / "tokenizer.json")) {
    return dir.string();
  }
  std::error_code ec;
  fs::create_directories(dir.parent_path(), ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create ", dir.parent_path().string(), ": ", ec.message()));
  }
  std::mt19937_64 rng(std::random_device{}());
  const fs::path tmp = dir.parent_path() / absl::StrCat(".tmp-", getpid(), "-", rng());
  TANDEM_RETURN_IF_ERROR(WriteDefaultModel(tmp.string()));
  fs::rename(tmp, dir, ec);
  if (ec) {
    // Another process won the race; its copy is byte-identical.
    fs::remove_all(tmp);
    if (!fs::exists(dir / "config.json")) {
      return absl::InternalError(absl::StrCat("cannot install default model at ", dir.string(),
                                              ": ", ec.message()));
    }
  }
  return dir.string();
}

}  // namespace tandem
