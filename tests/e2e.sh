#!/usr/bin/env bash
# The end-to-end tier: builds (or reuses) the control-plane binaries, starts a local cluster,
# runs the kaito-e2e tests against it, and tears the cluster down, also on failure. Then the
# real-node tier: a second cluster with a real node (kubelet + containerd), the repository's
# images built and pushed to its registry, `helm install` of the chart, the seed examples served
# in real containers (tests/tests/real_node.rs).
#
#   tests/e2e.sh                      # all end-to-end tests
#   tests/e2e.sh seed_examples gpu_   # extra arguments go to the test binaries (name filters,
#                                     # --skip NAME, ...); every test binary runs (--no-fail-fast)
#
# Environment:
#   KAITO_CLUSTER_DIR        cluster state dir; default: a fresh temp dir, so a developer's
#                            cluster (and parallel runs) are left alone
#   KAITO_E2E_KEEP_CLUSTER=1 leave the cluster running afterwards (for debugging; then
#                            `KAITO_CLUSTER_DIR=... tests/cluster/cluster.sh down`)
#   KAITO_E2E_THREADS        test threads per binary (default 2)
#   KAITO_E2E_BUILD_BINS=0   skip `cargo build --workspace --bins --tests` first (the tests take the
#                            binaries from target/debug, or from KAITO_<NAME>_BIN)
#   KAITO_REAL_NODE=1|0      run the real-node tier (default 1). It needs Linux and root; without
#                            them this script fails and says so, unless KAITO_REAL_NODE=0 says to
#                            skip it (then the deployed system is not tested).
#   CARGO_TARGET_DIR etc.    as usual for cargo
#
# Exit status: 0 when every test passed; cargo's status (101) when a test failed (every test
# binary still runs); 1 when the binaries could not be built or the cluster could not start (the
# step is named on stderr); 130 when interrupted. The cluster is torn down in every case.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cluster="$root/tests/cluster/cluster.sh"
log() { printf '[e2e] %s\n' "$*" >&2; }
now_ms() { date +%s%3N; }
secs() { local d=$(( $(now_ms) - $1 )); printf '%d.%01ds' $((d / 1000)) $(((d % 1000) / 100)); }

unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

own_dir=0
if [ -z "${KAITO_CLUSTER_DIR:-}" ]; then
  KAITO_CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kaito-e2e-XXXXXX")
  own_dir=1
fi
export KAITO_CLUSTER_DIR

real_node=${KAITO_REAL_NODE:-1}
if [ "$real_node" = 1 ]; then
  if [ "$(uname -s)" != Linux ] || [ "$(id -u)" != 0 ]; then
    log "the real-node tier needs Linux and root (containerd, runc, a bridge, iptables), and this is $(uname -s) as uid $(id -u)."
    log "Run as root, or set KAITO_REAL_NODE=0 to skip it knowingly: the chart, the images and the pods as deployed are then NOT tested."
    exit 1
  fi
fi
node_dir="$KAITO_CLUSTER_DIR-node"

started=0 node_started=0
stop_cluster() { # dir
  KAITO_CLUSTER_DIR=$1 bash "$cluster" status >&2 || true
  if [ "${KAITO_E2E_KEEP_CLUSTER:-0}" = 1 ]; then
    log "keeping the cluster: KAITO_CLUSTER_DIR=$1 $cluster down"
  else
    KAITO_CLUSTER_DIR=$1 bash "$cluster" down
  fi
}
cleanup() {
  local rc=$?
  if [ "$started" = 1 ]; then stop_cluster "$KAITO_CLUSTER_DIR" || rc=1; fi
  if [ "$node_started" = 1 ]; then stop_cluster "$node_dir" || rc=1; fi
  if [ "$own_dir" = 1 ] && [ "${KAITO_E2E_KEEP_CLUSTER:-0}" != 1 ]; then
    rm -rf "$KAITO_CLUSTER_DIR" "$KAITO_CLUSTER_DIR.lock" "$node_dir" "$node_dir.lock"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$(now_ms)
t=$(now_ms)
bin=$("$root/tests/cluster/build.sh") || { log "building the control-plane binaries failed"; exit 1; }
export KAITO_CLUSTER_BIN=$bin
log "control-plane binaries ready in $(secs "$t"): $bin"

# The project's own binaries (webhook, controller, plugin, ...) that the tests start as local
# processes; KAITO_E2E_BUILD_BINS=0 skips this.
if [ "${KAITO_E2E_BUILD_BINS:-1}" = 1 ]; then
  t=$(now_ms)
  # One build of every package's binaries. `--tests` turns on the dev-dependencies, so the
  # features are unified exactly as in `cargo test --workspace`: after the cargo test tier
  # this compiles nothing (with `--bins` alone, mistral.rs & co. would be rebuilt).
  (cd "$root" && cargo build --workspace --bins --tests --locked) || { log "building the workspace binaries failed"; exit 1; }
  log "workspace binaries built in $(secs "$t")"
fi

t=$(now_ms)
# A cluster that was already running in an explicitly given dir is left running.
if ! bash "$cluster" status >/dev/null 2>&1; then started=1; fi
bash "$cluster" up || { log "starting the local cluster failed"; exit 1; }
log "cluster ready in $(secs "$t")"

t=$(now_ms)
rc=0
# The real-node tests run below, against a cluster of their own.
(cd "$root" && cargo test -p kaito-e2e --tests --no-fail-fast -- --include-ignored \
  --test-threads="${KAITO_E2E_THREADS:-2}" --skip real_node_ "$@") || rc=$?
log "end-to-end tests (simulated nodes) finished in $(secs "$t") (status $rc); whole run $(secs "$t0")"

if [ "$real_node" != 1 ]; then
  log "real-node tier SKIPPED (KAITO_REAL_NODE=$real_node): the chart, the images and the pods as deployed were not tested"
  exit "$rc"
fi
if [ "$started" = 1 ] && [ "${KAITO_E2E_KEEP_CLUSTER:-0}" != 1 ]; then
  bash "$cluster" down || { log "stopping the simulated-node cluster failed"; exit 1; }
  started=0
fi
t=$(now_ms)
if ! KAITO_CLUSTER_DIR=$node_dir bash "$cluster" status >/dev/null 2>&1; then node_started=1; fi
KAITO_CLUSTER_DIR=$node_dir bash "$cluster" up --real-node || { log "starting the cluster with a real node failed"; exit 1; }
log "cluster with a real node ready in $(secs "$t")"
t=$(now_ms)
node_rc=0
(cd "$root" && KAITO_CLUSTER_DIR=$node_dir KAITO_CLUSTER_REAL_NODE=1 \
  cargo test -p kaito-e2e --test real_node --no-fail-fast -- --include-ignored --test-threads=1 \
  --nocapture "$@") || node_rc=$?
log "real-node tier finished in $(secs "$t") (status $node_rc); whole run $(secs "$t0")"
[ "$rc" = 0 ] && rc=$node_rc
exit "$rc"
