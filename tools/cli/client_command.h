// `tandem client`: streams generations from a running router over gRPC.
#pragma once

#include <string>
#include <vector>

namespace tandem::cli {

// One concurrent Generate call per prompt. Exit status 0 when all
// succeeded, 1 otherwise.
int RunClient(const std::vector<std::string>& prompts);

}  // namespace tandem::cli
