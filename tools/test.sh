#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite, then the fuzz targets
# (tests/fuzz) in a clang build of their own, each for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" --timeout 600
BUILD_DIR=build-fuzz CC=clang-14 CXX=clang++-14 CMAKE_ARGS="-DTANDEM_FUZZ=ON -DTANDEM_CUDA=OFF" bash tools/build.sh
ctest --test-dir build-fuzz --output-on-failure -j "$(nproc)" --timeout 300
