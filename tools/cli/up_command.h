// `tandem up`: a local disaggregated cluster until Ctrl-C.
#pragma once

namespace tandem::cli {

int RunUp();

}  // namespace tandem::cli
