#include "tools/cli/default_model_command.h"

#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "common/default_model/default_model.h"

ABSL_FLAG(std::string, out, "", "write-default-model: directory to write the checkpoint into");

namespace tandem::cli {

int RunWriteDefaultModel() {
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    std::cerr << "tandem write-default-model: --out DIR is required\n";
    return 2;
  }
  absl::Status s = WriteDefaultModel(out);
  if (!s.ok()) {
    std::cerr << "tandem write-default-model: " << s << "\n";
    return 1;
  }
  std::cout << "wrote the default model to " << out << "\n";
  return 0;
}

}  // namespace tandem::cli
