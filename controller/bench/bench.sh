#!/usr/bin/env bash
# Benchmark: N workspaces (default 500) applied at once in the local simulated cluster, byo
# mode → seconds until all are WorkspaceSucceeded=True, the controller's peak RSS, and
# reconciles per second once idle.
#
#   controller/bench/bench.sh [N]
#
# Environment: KAITO_CONTROLLER_BIN (default: cargo build --release -p kaito-controller),
# KAITO_CLUSTER_DIR (default: a fresh temp dir, torn down afterwards), IDLE_SECONDS (30),
# BENCH_TIMEOUT (seconds from the start of the apply until giving up; 900),
# BENCH_LOG (where the controller's log is kept; default ${TMPDIR:-/tmp}/kaito-bench-<pid>.log),
# BENCH_FLOOR=1 (measure the floor instead: the same workloads applied without a controller in
# the loop, see below; prints `floor workloads=N ... all_pods_ready_s=S`).
#
# The workspaces are applied by BENCH_APPLY_PARALLEL (10) concurrent `kubectl apply
# --server-side` processes (one kubectl applies its objects one request at a time, which on a
# busy machine takes minutes for 500). Besides the wall-clock seconds from the start of the apply
# until all are True, the apiserver's timestamps give each workspace's latency (creation →
# WorkspaceSucceeded lastTransitionTime, 1 s resolution) and the span from the last creation
# until the last one turned True, which leave the apply's own duration out.
#
# API requests: the apiserver's own apiserver_request_total (kubectl get --raw /metrics) is read
# before the apply, once all are ready and after the idle period; the differences, divided by
# N, are printed by verb and by verb and resource (create → ready, and idle), together with the
# controller's own writes (kaito_controller_api_writes_total, by kind; absent from controllers
# before it existed). The counts include every client: the bench's kubectl (APPLY workspaces,
# LIST workspaces every 3 s), kube-controller-manager (pods, endpoint slices, StatefulSet
# status), the scheduler (bindings, events) and kwok (node and pod status).
#
# Nodes: ceil(N/8) kwok nodes, each with 8 allocatable GPUs and GPU-feature-discovery labels
# describing 1-GPU V100 nodes (so each workspace's single replica asks for 1 GPU and 8
# workspaces share a node); workspace i selects node i/8 by label.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
n=${1:-500}
idle=${IDLE_SECONDS:-30}
limit=${BENCH_TIMEOUT:-900}
par=${BENCH_APPLY_PARALLEL:-10}
cluster="$root/tests/cluster/cluster.sh"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1,localhost

own=0
if [ -z "${KAITO_CLUSTER_DIR:-}" ]; then
  KAITO_CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kaito-bench-XXXXXX"); own=1
fi
export KAITO_CLUSTER_DIR
bin=${KAITO_CONTROLLER_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release -p kaito-controller --bin kaito-controller >&2)
  bin="${CARGO_TARGET_DIR:-$root/target}/release/kaito-controller"
fi
ctl_pid=""
ns="kaito-bench-$$"
keep_log=${BENCH_LOG:-${TMPDIR:-/tmp}/kaito-bench-$$.log}
cleanup() {
  if [ -n "$ctl_pid" ]; then
    # On a cluster of its own that is torn down anyway, the 500 deletions are skipped.
    if [ "$own" != 1 ]; then
      kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
      kubectl delete workspaces -n "$ns" --all --timeout=120s >/dev/null 2>&1 || true
    fi
    # SIGTERM, then SIGKILL after 10 s: with reconciles stuck on a starved apiserver the
    # controller's graceful shutdown can wait on them for minutes.
    kill "$ctl_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$ctl_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$ctl_pid" 2>/dev/null || true
    wait "$ctl_pid" 2>/dev/null || true
    cp "$log" "$keep_log" 2>/dev/null && echo "[bench] controller log kept in $keep_log" >&2
  fi
  if [ "$own" = 1 ]; then
    bash "$cluster" down >/dev/null 2>&1 || true; rm -rf "$KAITO_CLUSTER_DIR" "$KAITO_CLUSTER_DIR.lock"
  else
    kubectl delete nodes -l kaito-bench=1 --wait=false >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

bash "$cluster" up >&2
eval "$(bash "$cluster" env)"
kubectl apply --server-side --force-conflicts -f "$root/charts/kaito/crds/" >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/workspaces.kaito.sh >/dev/null
kubectl create namespace "$ns" >/dev/null

nodes=$(( (n + 7) / 8 ))
{
  for i in $(seq 0 $((nodes - 1))); do
    cat <<YAML
---
apiVersion: v1
kind: Node
metadata:
  name: bench-$$-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels:
    kubernetes.io/hostname: bench-$$-$i
    type: kwok
    kaito-bench: "1"
    bench-node: "n$i"
    node.kubernetes.io/instance-type: Standard_NC6s_v3
    nvidia.com/gpu.product: Tesla-V100-PCIE-16GB
    nvidia.com/gpu.count: "1"
    nvidia.com/gpu.memory: "16384"
    nvidia.com/cuda.compute.major: "7"
    nvidia.com/cuda.compute.minor: "0"
spec:
  taints: [{key: sku, value: gpu, effect: NoSchedule}]
status:
  capacity: {cpu: "96", memory: 1Ti, pods: "110", nvidia.com/gpu: "8"}
  allocatable: {cpu: "96", memory: 1Ti, pods: "110", nvidia.com/gpu: "8"}
YAML
  done
} | kubectl apply -f - >/dev/null
kubectl wait --for=condition=Ready nodes -l kaito-bench=1 --timeout=120s >/dev/null
echo "[bench] $nodes nodes Ready" >&2

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log="$KAITO_CLUSTER_DIR/bench-controller.log"
RUST_LOG=warn "$bin" --provisioner byo --namespace "$ns" --no-leader-election \
  --metrics-addr "127.0.0.1:$port" >"$log" 2>&1 &
ctl_pid=$!
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { echo "[bench] controller not ready; log:" >&2; tail -n 20 "$log" >&2; exit 1; }

# Applies the files $1-*.* with one `kubectl apply --server-side` process each, at once; sets
# t0 (when it began) and applied_s (seconds it took).
apply_parallel() {
  t0=$(date +%s.%N)
  local pids=() f p
  for f in "$1"-*.*; do
    kubectl apply --server-side -f "$f" >/dev/null & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  applied_s=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{printf "%.1f", a-b}')
}
# One benchmark workspace: $1 its name, $2 the bench-node label of the node it must land on.
workspace_yaml() {
  cat <<YAML
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: $1, namespace: $ns}
resource:
  instanceType: Standard_NC6s_v3
  count: 1
  labelSelector: {matchLabels: {bench-node: "$2"}}
inference:
  preset: {name: phi-3-mini-4k-instruct}
YAML
}
apiserver_metrics() { kubectl get --raw /metrics | grep '^apiserver_request_total{' >"$KAITO_CLUSTER_DIR/bench-requests-$1.txt"; }
if [ "${BENCH_FLOOR:-0}" = 1 ]; then
  # The floor: no controller in the loop. One workspace is reconciled by the controller to
  # capture the children it writes (its StatefulSet and both Services); the controller is then
  # stopped and N copies of those children (renamed ws-<i>, affinity to node n<i/8>, no owner
  # reference) are applied the same way the workspaces are. The time until all their pods are
  # Ready is what this cluster needs for the workloads alone, before any controller work
  # (workspace, finalizer, status, Events): a lower bound for all_WorkspaceSucceeded_s.
  workspace_yaml ws-template n0 | kubectl apply -f - >/dev/null
  kubectl wait -n "$ns" --for=condition=WorkspaceSucceeded --timeout=120s workspace/ws-template >/dev/null
  kubectl get -n "$ns" -o json statefulset/ws-template service/ws-template service/ws-template-headless \
    >"$KAITO_CLUSTER_DIR/bench-children.json"
  # Deleted while the controller runs (it removes its finalizer); the garbage collector then
  # deletes the children and their pod, which frees the node's GPU for the copies.
  kubectl delete -n "$ns" workspace/ws-template --timeout=120s >/dev/null
  kubectl wait -n "$ns" --for=delete statefulset/ws-template pod/ws-template-0 --timeout=120s >/dev/null 2>&1 || true
  kill "$ctl_pid"; wait "$ctl_pid" 2>/dev/null || true; ctl_pid=""
  rm -f "$KAITO_CLUSTER_DIR"/bench-children-*.json
  python3 - "$KAITO_CLUSTER_DIR" "$n" "$par" <<'PY'
import json, sys
d, n, par = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
kept = []
for o in json.load(open(f"{d}/bench-children.json"))["items"]:
    o.pop("status", None)
    m = o["metadata"]
    o["metadata"] = {k: m[k] for k in ("name", "namespace", "labels", "annotations") if k in m}
    if o["kind"] == "Service":
        for k in ("clusterIP", "clusterIPs"):
            if o["spec"].get(k) != "None" and o["spec"].get(k) != ["None"]:
                o["spec"].pop(k, None)
    kept.append(json.dumps(o))
par = min(par, n)  # an empty file would fail its kubectl apply
files = [open(f"{d}/bench-children-{j}.json", "w") for j in range(par)]
for i in range(n):
    for t in kept:
        files[i % par].write(t.replace("ws-template", f"ws-{i}").replace('"n0"', f'"n{i // 8}"') + "\n")
PY
  apiserver_metrics start
  apply_parallel "$KAITO_CLUSTER_DIR/bench-children"
  echo "[bench] floor: the children of $n workspaces applied in ${applied_s}s ($par kubectl processes)" >&2
  while :; do
    done_n=$(kubectl get pods -n "$ns" -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$' || true)
    now=$(date +%s.%N)
    [ "$done_n" -ge "$n" ] && break
    if awk -v a="$now" -v b="$t0" -v l="$limit" 'BEGIN{exit !(a-b>l)}'; then
      echo "[bench] floor: timeout after ${limit}s: $done_n/$n pods Ready" >&2; exit 1
    fi
    sleep 3
  done
  secs=$(awk -v a="$now" -v b="$t0" 'BEGIN{printf "%.1f", a-b}')
  apiserver_metrics ready
  python3 - "$KAITO_CLUSTER_DIR" "$n" >&2 <<'PY'
import collections, re, sys
d, n = sys.argv[1], int(sys.argv[2])
WRITES = {"POST", "PUT", "PATCH", "APPLY", "DELETE"}
def load(p):
    out = collections.Counter()
    for line in open(f"{d}/bench-requests-{p}.txt"):
        m = re.match(r'^\w+\{(.*)\} ([0-9.e+]+)$', line.strip())
        if m:
            l = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            out[l["verb"]] += float(m.group(2))
    return out
a, b = load("start"), load("ready")
by = {k: b[k] - a.get(k, 0) for k in b if b[k] - a.get(k, 0) > 0}
print("[bench] floor: apiserver requests per workload, apply → all pods Ready: " + " ".join(f"{k}={v / n:.2f}" for k, v in sorted(by.items())) + f" (writes {sum(v for k, v in by.items() if k in WRITES) / n:.2f})")
PY
  kubectl get pods -n "$ns" -o json >"$KAITO_CLUSTER_DIR/bench-pods.json"
  kubectl get statefulsets -n "$ns" -o json >"$KAITO_CLUSTER_DIR/bench-sts.json"
  stages=$(python3 - "$KAITO_CLUSTER_DIR" <<'PY'
import calendar, json, sys, time
d = sys.argv[1]
t = lambda s: calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))
items = lambda f: json.load(open(f"{d}/bench-{f}.json"))["items"]
cond = lambda o, typ: next(t(c["lastTransitionTime"]) for c in o["status"]["conditions"] if c["type"] == typ)
sts, pods = items("sts"), items("pods")
first = min(t(s["metadata"]["creationTimestamp"]) for s in sts)
last = lambda xs: max(xs) - first
print("statefulsets_created=%d pods_created=%d pods_scheduled=%d pods_ready=%d" % (
    last([t(s["metadata"]["creationTimestamp"]) for s in sts]), last([t(p["metadata"]["creationTimestamp"]) for p in pods]),
    last([cond(p, "PodScheduled") for p in pods]), last([cond(p, "Ready") for p in pods])))
PY
)
  echo "[bench] floor: the last of each stage, seconds after the first StatefulSet was created: $stages" >&2
  echo "floor workloads=$n apply_s=$applied_s all_pods_ready_s=$secs"
  exit 0
fi

rm -f "$KAITO_CLUSTER_DIR"/bench-workspaces-*.yaml
for i in $(seq 0 $((n - 1))); do
    { echo ---; workspace_yaml "ws-$i" "n$((i / 8))"; } >>"$KAITO_CLUSTER_DIR/bench-workspaces-$((i % par)).yaml"
done
controller_writes() { curl -s "http://127.0.0.1:$port/metrics" | grep '^kaito_controller_api_writes_total' >"$KAITO_CLUSTER_DIR/bench-writes-$1.txt" || true; }
apiserver_metrics start; controller_writes start
apply_parallel "$KAITO_CLUSTER_DIR/bench-workspaces"
echo "[bench] $n workspaces applied in ${applied_s}s ($par kubectl processes)" >&2
# Polled every 3 s: listing 500 workspaces costs the 2-core machine's apiserver about as much as
# the controller's own requests. `all_WorkspaceSucceeded_s` is therefore up to 3 s late; the
# apiserver's timestamps below (workspaces_succeeded) are not.
while :; do
  done_n=$(kubectl get workspaces -n "$ns" -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="WorkspaceSucceeded")].status}{"\n"}{end}' | grep -c '^True$' || true)
  now=$(date +%s.%N)
  if [ "$done_n" -ge "$n" ]; then break; fi
  kill -0 "$ctl_pid" 2>/dev/null || { echo "[bench] controller exited; log:" >&2; tail -n 20 "$log" >&2; exit 1; }
  if awk -v a="$now" -v b="$t0" -v l="$limit" 'BEGIN{exit !(a-b>l)}'; then
    rss=$(awk '/VmHWM/{print $2}' "/proc/$ctl_pid/status")
    echo "[bench] timeout after ${limit}s: $done_n/$n WorkspaceSucceeded=True; controller_peak_rss_MiB=$((rss / 1024)) so far" >&2
    exit 1
  fi
  sleep 3
done
secs=$(awk -v a="$now" -v b="$t0" 'BEGIN{printf "%.1f", a-b}')
apiserver_metrics ready; controller_writes ready
r1=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^kaito_controller_reconciles_total/{print $2}')
sleep "$idle"
r2=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^kaito_controller_reconciles_total/{print $2}')
apiserver_metrics idle; controller_writes idle
# API requests per workspace, from the apiserver's counters (and the controller's own writes).
python3 - "$KAITO_CLUSTER_DIR" "$n" "$idle" >&2 <<'PY'
import collections, re, sys
d, n, idle = sys.argv[1], int(sys.argv[2]), sys.argv[3]
WRITES = {"CREATE", "POST", "UPDATE", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"}
def load(name, prefix):
    out = collections.Counter()
    for line in open(f"{d}/bench-{name}-{prefix}.txt"):
        m = re.match(r'^\w+\{(.*)\} ([0-9.e+]+)$', line.strip())
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            out[tuple(sorted(labels.items()))] += float(m.group(2))
    return out
def delta(name, a, b):
    x, y = load(name, a), load(name, b)
    return {k: y[k] - x.get(k, 0) for k in y if y[k] - x.get(k, 0) > 0}
for a, b, what in (("start", "ready", "create → all ready"), ("ready", "idle", f"idle {idle} s")):
    req = delta("requests", a, b)
    by_verb, by_res = collections.Counter(), collections.Counter()
    for k, v in req.items():
        l = dict(k)
        by_verb[l["verb"]] += v
        res = (l.get("group") + "/" if l.get("group") else "") + l["resource"] + ("/" + l["subresource"] if l.get("subresource") else "")
        by_res[(l["verb"], res)] += v
    writes = sum(v for k, v in by_verb.items() if k in WRITES)
    print(f"[bench] apiserver requests per workspace, {what}: " + " ".join(f"{k}={v / n:.2f}" for k, v in sorted(by_verb.items())) + f" (writes {writes / n:.2f})")
    top = [f"{verb} {res}={v / n:.2f}" for (verb, res), v in sorted(by_res.items(), key=lambda kv: -kv[1]) if v / n >= 0.05]
    print(f"[bench]   by verb and resource: " + ", ".join(top))
    if load("writes", b):
        own = {dict(k).get("kind"): v for k, v in delta("writes", a, b).items()}
        print(f"[bench]   the controller's own writes per workspace: total={sum(own.values()) / n:.2f} " + " ".join(f"{k}={v / n:.2f}" for k, v in sorted(own.items())))
PY
rss=$(awk '/VmHWM/{print $2}' "/proc/$ctl_pid/status")
errs=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^kaito_controller_reconcile_errors_total/{printf "%s%s", sep, $0; sep=" "}')
echo "[bench] reconcile errors: ${errs:-none}; controller log lines WARN=$(grep -c WARN "$log" || true) ERROR=$(grep -c ERROR "$log" || true)" >&2
kubectl get workspaces -n "$ns" -o json >"$KAITO_CLUSTER_DIR/bench-ws.json"
kubectl get statefulsets -n "$ns" -o json >"$KAITO_CLUSTER_DIR/bench-sts.json"
kubectl get pods -n "$ns" -o json >"$KAITO_CLUSTER_DIR/bench-pods.json"
# Per-workspace latency, and when the last object of each stage of the pipeline appeared (s after
# the first workspace was created): the controller's StatefulSets, kube-controller-manager's
# pods, the scheduler's bindings, kwok's Ready pods, the controller's WorkspaceSucceeded.
read -r lat stages < <(python3 - "$KAITO_CLUSTER_DIR" <<'PY'
import calendar, json, sys, time
d = sys.argv[1]
t = lambda s: calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))
items = lambda f: json.load(open(f"{d}/bench-{f}.json"))["items"]
cond = lambda o, typ: next(t(c["lastTransitionTime"]) for c in o["status"]["conditions"] if c["type"] == typ)
pairs = [(t(w["metadata"]["creationTimestamp"]), cond(w, "WorkspaceSucceeded")) for w in items("ws")]
lats = sorted(r - c for c, r in pairs)
first = min(c for c, _ in pairs)
pods = items("pods")
last = lambda xs: max(xs) - first
print("ws_latency_p50_s=%d,ws_latency_max_s=%d,last_created_to_all_ready_s=%d" % (
    lats[len(lats) // 2], lats[-1], max(r for _, r in pairs) - max(c for c, _ in pairs)),
    "workspaces_created=%d,statefulsets_created=%d,pods_created=%d,pods_scheduled=%d,pods_ready=%d,workspaces_succeeded=%d" % (
    last([c for c, _ in pairs]), last([t(s["metadata"]["creationTimestamp"]) for s in items("sts")]),
    last([t(p["metadata"]["creationTimestamp"]) for p in pods]),
    last([cond(p, "PodScheduled") for p in pods]), last([cond(p, "Ready") for p in pods]),
    last([r for _, r in pairs])))
PY
)
lat=${lat//,/ }
echo "[bench] the last of each stage, seconds after the first workspace was created: ${stages//,/ }" >&2
echo "workspaces=$n apply_s=$applied_s all_WorkspaceSucceeded_s=$secs $lat controller_peak_rss_MiB=$((rss / 1024)) reconciles_total=$r2 idle_reconciles_per_s=$(awk -v a="$r2" -v b="$r1" -v t="$idle" 'BEGIN{printf "%.2f", (a-b)/t}')"
