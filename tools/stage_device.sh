#!/usr/bin/env bash
# Stages binaries for the device machine: copies (stripped) the named
# binaries from a CUDA build into OUT_DIR/bin and the non-system shared
# libraries they load into OUT_DIR/lib. The device image has its own libc,
# libstdc++, CUDA runtime, cuBLAS(Lt) and NCCL, so those stay out (cuBLASLt
# alone is far over the device tool's 64 MiB carry limit).
#
#   tools/stage_device.sh build-cuda .device tandem tandem-router ...
# Run there with LD_LIBRARY_PATH=$PWD/.device/lib:/usr/local/cuda/lib64
set -euo pipefail
BUILD_DIR=$1
OUT_DIR=$2
shift 2
mkdir -p "$OUT_DIR/bin" "$OUT_DIR/lib"
skip='^(libc|libm|libstdc\+\+|libgcc_s|ld-linux|libpthread|libdl|librt|libcuda|libcudart|libcublas|libcublasLt|libnccl|libnvidia|linux-vdso)\.'
for name in "$@"; do
  bin=$(find "$BUILD_DIR" -type f -name "$name" -perm -u+x | head -1)
  [[ -n $bin ]] || { echo "stage_device: no binary $name in $BUILD_DIR" >&2; exit 1; }
  install -m 755 "$bin" "$OUT_DIR/bin/$name"
  strip "$OUT_DIR/bin/$name"
  ldd "$bin" | awk '/=> \// {print $1, $3}' | while read -r lib path; do
    [[ $lib =~ $skip ]] && continue
    [[ -e $OUT_DIR/lib/$lib ]] || { cp -L "$path" "$OUT_DIR/lib/$lib"; strip --strip-unneeded "$OUT_DIR/lib/$lib" 2>/dev/null || true; }
  done
done
du -sh "$OUT_DIR"
