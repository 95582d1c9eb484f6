#!/usr/bin/env bash
# Compile kaito-runtime with the `cuda` feature on a machine that has neither a GPU nor a CUDA
# install (the Dockerfile is the real build; this shows the feature compiles and links).
#
#   runtime/cuda-check.sh                      # CUDA_COMPUTE_CAP=90 (H100/H200)
#   CUDA_COMPUTE_CAP=80 runtime/cuda-check.sh  # A100
#
# What it installs, under ~/.cache/kaito-rs/cuda (CUDA_CHECK_DIR): a Python venv holding
# NVIDIA's CUDA 13.0 component wheels from PyPI (nvcc, nvvm and crt must be the same patch
# release, 13.0.88: a crt of another version breaks nvcc with `__cudaLaunch` macro errors;
# cudart, cccl, cublas, nvrtc 13.0; curand). They unpack under site-packages/nvidia/cu13, which
# becomes CUDA_HOME. The linker needs unversioned lib*.so names for the wheels' .so.13 files,
# and a libcuda.so: the driver library comes from the GPU node at run time, so here a stub with
# soname libcuda.so.1 defines the driver symbols the link asks for (found by a first link).
#
# Prints the binary's size (raw, stripped, xz) and the CUDA libraries it needs at run time.
# About 30 minutes on 2 cores (mistral.rs and candle's CUDA kernels, release profile).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${CUDA_CHECK_DIR:-$HOME/.cache/kaito-rs/cuda}"
VENV="$WORK/venv"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${CUDA_CHECK_TARGET_DIR:-$HOME/.cache/kaito-rs/target-cuda}"
export RUSTFLAGS="${CUDA_CHECK_RUSTFLAGS:--C target-cpu=x86-64-v3}"
mkdir -p "$WORK"

if [ ! -f "$VENV/.cuda-wheels-installed" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet \
        nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
        'nvidia-cuda-runtime==13.0.*' 'nvidia-cuda-cccl==13.0.*' 'nvidia-cublas==13.0.*' \
        'nvidia-cuda-nvrtc==13.0.*' nvidia-curand
    touch "$VENV/.cuda-wheels-installed"
fi
CUDA="$("$VENV/bin/python" -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
export CUDA_HOME="$CUDA" CUDA_PATH="$CUDA" CUDA_ROOT="$CUDA" PATH="$CUDA/bin:$PATH"
nvcc --version | tail -n 2

# Unversioned names for the linker, and the driver stub, in one directory on LIBRARY_PATH.
LINK="$WORK/link"
mkdir -p "$LINK"
for lib in "$CUDA"/lib/lib*.so.*; do
    base="$(basename "$lib")"
    ln -sf "$lib" "$LINK/${base%%.so.*}.so"
done
export LIBRARY_PATH="$LINK:$CUDA/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"

stub() {
    # $1: file listing the driver symbols; writes $LINK/libcuda.so (soname libcuda.so.1).
    sed 's/.*/int &(void) { return 999; }/' "$1" > "$WORK/libcuda-stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$LINK/libcuda.so" "$WORK/libcuda-stub.c"
}
# rust-lld needs a libcuda.so to exist before it reports which symbols are missing.
touch "$WORK/driver-symbols.txt"
stub "$WORK/driver-symbols.txt"

build() {
    (cd "$ROOT" && cargo build --release --locked -p kaito-runtime --bin kaito-runtime --features cuda)
}
start=$(date +%s)
# rust-lld reports at most 20 undefined symbols per link, so stub and relink until it links.
for attempt in 1 2 3 4 5 6; do
    if build 2> >(tee "$WORK/build.log" >&2); then break; fi
    # GNU ld: "undefined reference to `cuX'"; rust-lld: "undefined symbol: cuX".
    grep -oE "(undefined reference to \`|undefined symbol: )cu[A-Za-z0-9_]*" "$WORK/build.log" \
        | grep -oE "cu[A-Za-z0-9_]*$" | sort -u > "$WORK/driver-symbols.txt.new" || true
    if [ ! -s "$WORK/driver-symbols.txt.new" ] || [ "$attempt" = 6 ]; then
        echo "cuda-check: the build failed for another reason than missing driver symbols (log: $WORK/build.log)" >&2
        exit 1
    fi
    { cat "$WORK/driver-symbols.txt.new"; cat "$WORK/driver-symbols.txt"; } | sort -u > "$WORK/driver-symbols.all"
    mv "$WORK/driver-symbols.all" "$WORK/driver-symbols.txt"
    echo "cuda-check: stubbing $(wc -l < "$WORK/driver-symbols.txt") driver symbols in libcuda.so and linking again" >&2
    stub "$WORK/driver-symbols.txt"
done
secs=$(( $(date +%s) - start ))

BIN="$CARGO_TARGET_DIR/release/kaito-runtime"
strip -o "$WORK/kaito-runtime.stripped" "$BIN"
xz -T0 -9 -k -c "$WORK/kaito-runtime.stripped" > "$WORK/kaito-runtime.xz"
mib() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "cuda-check: kaito-runtime --features cuda (sm_${CUDA_COMPUTE_CAP}) built in ${secs}s"
echo "cuda-check: binary $(mib "$BIN"), stripped $(mib "$WORK/kaito-runtime.stripped"), xz $(mib "$WORK/kaito-runtime.xz")"
echo "cuda-check: needs at run time: $(readelf -d "$BIN" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
