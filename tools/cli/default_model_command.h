// `tandem write-default-model --out DIR`: writes the built-in default
// checkpoint to a directory, to inspect it or load it with other tools.
#pragma once

namespace tandem::cli {

int RunWriteDefaultModel();

}  // namespace tandem::cli
