// `tandem generate`: runs the engine in this process and prints tokens as
// they come. The monolithic reference for the disaggregated path.
#pragma once

#include <string>
#include <vector>

namespace tandem::cli {

int RunGenerate(const std::vector<std::string>& prompts);

}  // namespace tandem::cli
