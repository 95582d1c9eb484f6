#!/usr/bin/env bash
# Creates (once) the Python virtualenv the tests use and prints its python.
# Pinned so a run is repeatable; the cache dir survives between runs on one machine.
set -euo pipefail
venv="$HOME/.cache/kaito-rs/venv"
want="openai==3.54.0"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai' 2>/dev/null \
   || [ "$("$venv/bin/pip" freeze 2>/dev/null | grep -i '^openai==')" != "$want" ]; then
  if ! python3 -m venv "$venv"; then
    # Debian's own python3 creates no virtualenv (no ensurepip) without python3-venv.
    command -v apt-get >/dev/null || { echo "python3 cannot create a virtualenv: install its venv module" >&2; exit 1; }
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    echo "installing Debian package python3-venv" >&2
    { $sudo apt-get install -y python3-venv || { $sudo apt-get update && $sudo apt-get install -y python3-venv; }; } >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$want"
fi
echo "$venv/bin/python"
