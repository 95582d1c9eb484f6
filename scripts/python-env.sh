#!/usr/bin/env bash
# Creates (once) the Python virtualenv the tests use and prints its python.
# Pinned so a run is repeatable; the cache dir survives between runs on one machine.
set -euo pipefail
venv="$HOME/.cache/kaito-rs/venv"
want="openai==3.54.0"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai' 2>/dev/null \
   || [ "$("$venv/bin/pip" freeze 2>/dev/null | grep -i '^openai==')" != "$want" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$want"
fi
echo "$venv/bin/python"
