#!/usr/bin/env bash
# Sets up, builds and runs tandem on the built-in default model.
# Extra arguments go to `tandem generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
if (($#)); then
  exec ./build/tools/tandem generate "$@"
fi
exec ./build/tools/tandem generate --max_new_tokens=32 "The quick brown fox"
