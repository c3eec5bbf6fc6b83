#!/usr/bin/env bash
# Sets up, builds and starts a local disaggregated cluster on the built-in
# default model: a router on 127.0.0.1:8000, one prefill and one decode
# worker. Ctrl-C stops everything. Extra arguments go to `tandem up`
# (e.g. --prefill 2 --decode 2). Then, from another terminal:
#   ./build/bin/tandem client --router 127.0.0.1:8000 "Once upon a time"
#   curl -N http://127.0.0.1:8080/v1/completions -H 'Content-Type: application/json' \
#     -d '{"prompt": "Once upon a time", "max_tokens": 32, "stream": true}'
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
exec ./build/bin/tandem up --prefill 1 --decode 1 "$@"
