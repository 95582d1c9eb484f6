#!/usr/bin/env bash
# Benchmark of kubectl kaito (release build), on the local control plane:
#   - `kubectl kaito get -A` with 500 workspaces (target ≤ 300 ms)
#   - `kubectl kaito models list`                (target ≤ 20 ms)
#   - binary startup (`kubectl kaito version`)
# Uses hyperfine when installed (apt-get install hyperfine), else a loop timed with date +%s%N.
#
#   kubectl-kaito/bench/bench.sh            # starts (or reuses) the local cluster
#   N=500 RUNS=20 kubectl-kaito/bench/bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-500}
RUNS=${RUNS:-20}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/kaito-rs/target}

cargo build --release -p kubectl-kaito --bin kubectl-kaito >&2
BIN=$CARGO_TARGET_DIR/release/kubectl-kaito

bash tests/cluster/cluster.sh up >&2
eval "$(bash tests/cluster/cluster.sh env)"
kubectl apply -f charts/kaito/crds/ >/dev/null
kubectl wait --for=condition=Established crd/workspaces.kaito.sh --timeout=60s >/dev/null

NS=kaito-bench
kubectl create namespace $NS --dry-run=client -o yaml | kubectl apply -f - >/dev/null
have=$(kubectl get workspaces.kaito.sh -n $NS --no-headers 2>/dev/null | wc -l)
if [ "$have" -lt "$N" ]; then
  echo "creating $((N - have)) workspaces in $NS ..." >&2
  tmp=$(mktemp)
  for i in $(seq "$have" $((N - 1))); do
    cat >>"$tmp" <<YAML
---
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: bench-$i, namespace: $NS}
resource: {instanceType: Standard_NC6s_v3, count: 1, labelSelector: {matchLabels: {apps: bench-$i}}}
inference: {preset: {name: phi-3-mini-4k-instruct}}
YAML
  done
  kubectl apply --server-side -f "$tmp" >/dev/null
  rm -f "$tmp"
fi
count=$("$BIN" get -A | tail -n +2 | wc -l)
echo "workspaces listed by get -A: $count" >&2

bench() { # name, command...
  local name=$1; shift
  if command -v hyperfine >/dev/null; then
    hyperfine -N --warmup 3 --runs "$RUNS" --export-json /tmp/kk-bench.json "$*" >/dev/null 2>&1
    python3 -c "import json;r=json.load(open('/tmp/kk-bench.json'))['results'][0];print('%-28s mean %7.1f ms  min %7.1f ms  max %7.1f ms  (hyperfine, %d runs)'%('$name',r['mean']*1e3,r['min']*1e3,r['max']*1e3,len(r['times'])))"
  else
    local t0 t1 total=0 min=999999999 max=0
    for _ in 1 2 3; do "$@" >/dev/null; done
    for _ in $(seq "$RUNS"); do
      t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N)
      d=$(( (t1 - t0) / 1000 )); total=$((total + d))
      [ $d -lt $min ] && min=$d; [ $d -gt $max ] && max=$d
    done
    awk -v n="$name" -v t=$total -v r="$RUNS" -v mi=$min -v ma=$max 'BEGIN{printf "%-28s mean %7.1f ms  min %7.1f ms  max %7.1f ms  (date loop, %d runs)\n", n, t/r/1000, mi/1000, ma/1000, r}'
  fi
}

echo "kubectl kaito benchmark ($(nproc) cores, load average $(cut -d" " -f1-3 /proc/loadavg), release build, $N workspaces)"
bench "get -A ($count workspaces)" "$BIN" --kubeconfig "$KUBECONFIG" get -A
bench "models list" "$BIN" models list
bench "startup (version)" "$BIN" version
# Reference, not a target: kubectl itself listing the same objects (its own startup included).
bench "kubectl get -A (reference)" "$(command -v kubectl)" --kubeconfig "$KUBECONFIG" get workspaces.kaito.sh -A
