#!/usr/bin/env bash
# Runtime checks for CI: fmt, clippy and the tests, including the official `openai` Python
# client test, which must not skip here. Needs python3 with venv and pip (PyPI access).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${KAITO_OPENAI_VENV:-$HOME/.cache/kaito-rs/venv-openai}"
if ! "$VENV/bin/python" -c 'import openai' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet 'openai>=1.40,<4'
fi
export KAITO_PYTHON="$VENV/bin/python"
export KAITO_REQUIRE_OPENAI=1

cargo fmt -p kaito-runtime -- --check
cargo clippy -p kaito-runtime --all-targets -- -D warnings
cargo test -p kaito-runtime
