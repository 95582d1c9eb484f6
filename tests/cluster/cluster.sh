#!/usr/bin/env bash
# A real, local Kubernetes control plane on 127.0.0.1 for the end-to-end tests and the demo.
#
#   tests/cluster/cluster.sh up              # start (or reuse) etcd, kube-apiserver,
#                                            # kube-controller-manager, kube-scheduler and kwok
#   tests/cluster/cluster.sh up --real-node  # ... and a real node: kubelet + containerd + CNI
#                                            # bridge, kube-proxy and a local OCI registry
#                                            # (Linux and root only; see node.sh)
#   tests/cluster/cluster.sh down            # stop everything `up` started, remove the state dir
#   tests/cluster/cluster.sh status          # components, pids, ports, memory, readiness
#   tests/cluster/cluster.sh env             # `eval "$(tests/cluster/cluster.sh env)"` for a shell
#   tests/cluster/cluster.sh kubeconfig      # print the admin kubeconfig's path
#   tests/cluster/cluster.sh bin             # print the directory of the control-plane binaries
#   tests/cluster/cluster.sh kubectl ARGS... # kubectl against this cluster
#   tests/cluster/cluster.sh registry        # the real node's registry (host:port) images are
#                                            # pushed to and pulled from
#   tests/cluster/cluster.sh node-name       # the real node's name
#   tests/cluster/cluster.sh advertise-gpus [--sku S] [--gpus N] [--label k=v]...
#        # the real node as a GPU node of that size: labels, nvidia.com/gpu in its status
#   tests/cluster/cluster.sh add-gpu-node NAME [--sku S] [--gpus N] [--gpu-memory-mib M]
#        [--product P] [--cc MAJOR.MINOR] [--cpu C] [--memory Q] [--pods N]
#        [--agentpool P] [--label k=v]... [--taint k=v:Effect]... [--no-taint]
#
# Environment:
#   KAITO_CLUSTER_DIR   state dir (certificates, etcd data, logs, pid files);
#                       default $HOME/.cache/kaito-rs/run/default. Use one per parallel run.
#   KAITO_CLUSTER_BIN   directory holding the binaries; default: what build.sh prints
#                       (build.sh builds them on first use, which takes long).
#   KAITO_CLUSTER_{ETCD,ETCD_PEER,APISERVER,CONTROLLER_MANAGER,SCHEDULER,KWOK}_PORT
#                       fixed ports instead of free ones picked at random; `up` fails with a
#                       clear error when one of them is already taken.
#   KAITO_CLUSTER_TIMEOUT  seconds to wait for each component (default 120).
#   KAITO_CLUSTER_REAL_NODE=1  same as `up --real-node`.
#   KAITO_CLUSTER_NODE_{NAME,BRIDGE,NET}  the real node's name (kaito-node-1), bridge (kaito0)
#                       and /24 network prefix (10.88.77): the bridge's .1 is the node's IP,
#                       the kubelet's address and the API server's address.
#
# With a real node, the API server listens on the node's bridge IP (pods reach it through the
# `kubernetes` Service via kube-proxy, as in-cluster clients do), not on 127.0.0.1.
#
# Other nodes are simulated by kwok: only nodes annotated kwok.x-k8s.io/node=fake are managed,
# their pods become Running and Ready, Jobs' pods complete, `kubectl logs` reads files named
# by kwok Logs/ClusterLogs objects and `kubectl port-forward` reaches the targets named by
# PortForward/ClusterPortForward objects.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${KAITO_CLUSTER_DIR:-$HOME/.cache/kaito-rs/run/default}
TIMEOUT=${KAITO_CLUSTER_TIMEOUT:-120}
KWOK_ANNOTATION=kwok.x-k8s.io/node
KWOK_ANNOTATION_VALUE=fake
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
POD_CIDR=10.244.0.1/16
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
K8S_PAUSE_TAG=3.10
# shellcheck source=tests/cluster/node.sh
. "$here/node.sh"
if real_node; then COMPONENTS+=("${NODE_COMPONENTS[@]}" node-ns); fi

# Loopback must never go through a proxy.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
secs_since() { local d=$(( $(now_ms) - $1 )); printf '%d.%01ds' $((d / 1000)) $(((d % 1000) / 100)); }

bin_dir() {
  if [ -n "${KAITO_CLUSTER_BIN:-}" ]; then
    echo "$KAITO_CLUSTER_BIN"
  elif [ -f "$DIR/bin" ] && [ -d "$(cat "$DIR/bin")" ]; then
    cat "$DIR/bin"
  else
    "$here/build.sh"
  fi
}

# The start time of a process (clock ticks since boot, field 22 of /proc/PID/stat): it names
# the process across exec and tells a recycled pid apart. The fields are read after the last
# ')' because the command name in parentheses may contain spaces.
start_time() { # pid
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  # shellcheck disable=SC2086
  set -- $s
  [ "$1" != Z ] || return 1
  [ -n "${20:-}" ] && echo "${20}"
}

pid_alive() { # name
  local f="$DIR/pids/$1.pid" pid want now
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] || return 1
  now=$(start_time "$pid") || return 1
  if [ -f "$DIR/pids/$1.start" ]; then
    want=$(cat "$DIR/pids/$1.start")
    [ -n "$want" ] && [ "$now" = "$want" ]
  else
    # A cluster started by an older cluster.sh recorded no start time: match the name instead.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -- "$1" >/dev/null
  fi
}

port_in_use() { # port
  if command -v ss >/dev/null; then
    [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

declare -A PORTS=()
pick_port() { # component env-var
  local name=$1 var=$2 p
  p=${!var:-}
  if [ -n "$p" ]; then
    port_in_use "$p" && die "port $p for $name (from $var) is already in use on 127.0.0.1; free it or choose another"
  else
    for _ in $(seq 1 200); do
      p=$(( 20000 + RANDOM % 12000 ))
      port_in_use "$p" && continue
      [[ " ${PORTS[*]} " == *" $p "* ]] && continue
      break
    done
  fi
  PORTS[$name]=$p
}

quiet() { "$@" >/dev/null 2>&1; }
curl_ok() { curl --noproxy '*' -fsS -o /dev/null --max-time 3 "$@" 2>/dev/null; }

start() { # name binary args...
  local name=$1; shift
  log "starting $name"
  # Own session, no terminal, no inherited stdout: the caller (a test harness) must not wait
  # for these processes to close its pipes.
  # 9>&-: the lock taken by `up` must not be inherited by the long-lived processes.
  setsid "$@" </dev/null >>"$DIR/logs/$name.log" 2>&1 9>&- &
  local pid=$!
  echo "$pid" >"$DIR/pids/$name.pid"
  # Not the command line: it is empty while the binary is being exec'd (long with a cold page
  # cache), which made a starting component look dead.
  start_time "$pid" >"$DIR/pids/$name.start" || true
}

fail_component() { # name reason
  local name=$1 reason=$2 logf="$DIR/logs/$1.log"
  log "$name: $reason; last lines of $logf:"
  tail -n 25 "$logf" >&2 || true
  if grep -qi 'address already in use' "$logf" 2>/dev/null; then
    log "$name could not bind its port: a port is already in use on 127.0.0.1"
  fi
  stop_all
  exit 1
}

wait_for() { # name description command...
  local name=$1 what=$2 deadline=$(( $(date +%s) + TIMEOUT )); shift 2
  until "$@"; do
    pid_alive "$name" || fail_component "$name" "exited while waiting for $what"
    [ "$(date +%s)" -lt "$deadline" ] || fail_component "$name" "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.2
  done
}

# ---------------------------------------------------------------------------------------------
# Certificates, keys and kubeconfigs (openssl is part of a fresh Debian machine). ECDSA P-256
# keys: generating them costs milliseconds where RSA costs seconds on a busy 2-core machine.

cert() { # name subject days ext-lines...
  local name=$1 subj=$2; shift 2
  local d="$DIR/pki"
  printf '%s\n' "$@" >"$d/$name.ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$d/$name.key" -subj "$subj" -out "$d/$name.csr" 2>/dev/null
  openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$d/$name.ext" -out "$d/$name.crt" 2>/dev/null
  rm -f "$d/$name.csr" "$d/$name.ext"
}

kubeconfig_file() { # file user cert key
  local b64="base64 -w0"
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kaito-local
  cluster:
    server: https://$APISERVER_HOST:${PORTS[kube-apiserver]}
    certificate-authority-data: $($b64 <"$DIR/pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $($b64 <"$3")
    client-key-data: $($b64 <"$4")
contexts:
- name: kaito-local
  context:
    cluster: kaito-local
    user: $2
current-context: kaito-local
EOF
  chmod 600 "$1"
}

gen_pki() {
  local d="$DIR/pki"
  mkdir -p "$d"
  command -v openssl >/dev/null || die "openssl is required to generate the cluster's certificates"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$d/ca.key" -subj "/CN=kaito-local-ca" \
    -days 3650 -sha256 -out "$d/ca.crt" 2>/dev/null
  local server="keyUsage=critical,digitalSignature,keyEncipherment"
  cert apiserver "/CN=kube-apiserver" "$server" "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:127.0.0.1,IP:$APISERVER_HOST,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert kwok "/CN=kwok" "$server" "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost"
  local client="keyUsage=critical,digitalSignature,keyEncipherment"
  cert admin "/O=system:masters/CN=kubernetes-admin" "$client" "extendedKeyUsage=clientAuth"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client" "extendedKeyUsage=clientAuth"
  cert controller-manager "/CN=system:kube-controller-manager" "$client" "extendedKeyUsage=clientAuth"
  cert scheduler "/CN=system:kube-scheduler" "$client" "extendedKeyUsage=clientAuth"
  # The API server's client certificate for admission webhooks (kaito-webhook --client-ca-file
  # pki/ca.crt --client-allowed-names kube-apiserver-webhook-client), given to every webhook
  # through the admission configuration ("*" matches any webhook host).
  cert webhook-client "/CN=kube-apiserver-webhook-client" "$client" "extendedKeyUsage=clientAuth"
  printf '%s\n' "apiVersion: v1" "kind: Config" "users:" "- name: \"*\"" "  user:" \
    "    client-certificate: $d/webhook-client.crt" "    client-key: $d/webhook-client.key" \
    >"$DIR/webhook-client.kubeconfig"
  local p
  {
    echo "apiVersion: apiserver.config.k8s.io/v1"
    echo "kind: AdmissionConfiguration"
    echo "plugins:"
    for p in ValidatingAdmissionWebhook MutatingAdmissionWebhook; do
      echo "- name: $p"
      echo "  configuration:"
      echo "    apiVersion: apiserver.config.k8s.io/v1"
      echo "    kind: WebhookAdmissionConfiguration"
      echo "    kubeConfigFile: $DIR/webhook-client.kubeconfig"
    done
  } >"$DIR/admission-control.yaml"
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/sa.key" 2>/dev/null
  openssl ec -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  kubeconfig_file "$DIR/kubeconfig" kubernetes-admin "$d/admin.crt" "$d/admin.key"
  kubeconfig_file "$DIR/controller-manager.kubeconfig" system:kube-controller-manager "$d/controller-manager.crt" "$d/controller-manager.key"
  kubeconfig_file "$DIR/scheduler.kubeconfig" system:kube-scheduler "$d/scheduler.crt" "$d/scheduler.key"
  if real_node; then node_pki; fi
}

# ---------------------------------------------------------------------------------------------

healthy() {
  [ -f "$DIR/.kaito-cluster" ] && [ -f "$DIR/ports" ] || return 1
  local c
  for c in "${COMPONENTS[@]}"; do pid_alive "$c" || return 1; done
  # shellcheck disable=SC1091
  local ap; ap=$(. "$DIR/ports"; echo "${APISERVER_HOST:-127.0.0.1}:$KUBE_APISERVER")
  curl_ok --cacert "$DIR/pki/ca.crt" "https://$ap/readyz"
}

stop_all() {
  [ -d "$DIR/pids" ] || return 0
  if real_node; then node_down; fi
  local c pids=() i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c=${COMPONENTS[$i]}
    if pid_alive "$c"; then
      pids+=("$(cat "$DIR/pids/$c.pid")")
      kill -TERM "$(cat "$DIR/pids/$c.pid")" 2>/dev/null || true
    fi
  done
  local deadline=$(( $(date +%s) + 15 )) p
  for p in "${pids[@]}"; do
    while kill -0 "$p" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ]; do
      if [ "$(date +%s)" -ge "$deadline" ]; then kill -KILL "$p" 2>/dev/null || true; sleep 0.2; break; fi
      sleep 0.1
    done
  done
  for c in "${COMPONENTS[@]}"; do
    if pid_alive "$c"; then die "$c (pid $(cat "$DIR/pids/$c.pid")) is still running"; fi
    rm -f "$DIR/pids/$c.pid" "$DIR/pids/$c.start"
  done
}

cmd_down() {
  if [ ! -e "$DIR" ]; then log "nothing to stop ($DIR does not exist)"; return 0; fi
  [ -f "$DIR/.kaito-cluster" ] || die "$DIR is not a cluster state dir (no .kaito-cluster marker); not touching it"
  stop_all
  rm -rf "$DIR"
  log "stopped; removed $DIR"
}

kwok_crds_dir() { # bin
  local d
  for d in "$1/../share/kwok/crd" "$here/kwok-crds"; do
    if [ -f "$d/kwok.x-k8s.io_logs.yaml" ]; then echo "$d"; return 0; fi
  done
  die "kwok's CRDs are missing next to the binaries ($1/../share/kwok/crd); rerun tests/cluster/build.sh"
}

cmd_up() {
  local t0 t bin want_node=${KAITO_CLUSTER_REAL_NODE:-0}
  while [ $# -gt 0 ]; do
    case "$1" in
      --real-node) want_node=1; shift ;;
      *) die "up: unknown option $1" ;;
    esac
  done
  t0=$(now_ms)
  if healthy && [ "$want_node" = 1 ] && ! real_node; then
    die "the cluster in $DIR runs without a real node; stop it ($0 down) or use another KAITO_CLUSTER_DIR"
  fi
  if healthy; then
    log "reusing the running cluster in $DIR"
    print_summary
    return 0
  fi
  if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then
    [ -f "$DIR/.kaito-cluster" ] \
      || die "$DIR exists and is not a cluster state dir; choose another KAITO_CLUSTER_DIR"
    log "cleaning up a stale or partial cluster in $DIR"
    stop_all
    rm -rf "$DIR"
  fi
  command -v curl >/dev/null || die "curl is required"
  bin=$(bin_dir)
  local b
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kwok kubectl; do
    [ -x "$bin/$b" ] || die "$bin/$b is missing; run tests/cluster/build.sh"
  done
  local crds; crds=$(kwok_crds_dir "$bin")
  if [ "$want_node" = 1 ]; then
    for b in kubelet kube-proxy pause; do
      [ -x "$bin/$b" ] || die "$bin/$b is missing; run tests/cluster/build.sh"
    done
    node_preflight
  fi

  mkdir -p "$DIR"/{pids,logs,etcd,home}
  touch "$DIR/.kaito-cluster"
  echo "$bin" >"$DIR/bin"
  APISERVER_HOST=127.0.0.1
  if [ "$want_node" = 1 ]; then
    touch "$DIR/real-node"
    COMPONENTS+=("${NODE_COMPONENTS[@]}" node-ns)
    APISERVER_HOST=$NODE_IP
  fi
  # Anything failing from here on leaves nothing running (and the host as it was).
  trap 'rc=$?; if [ $rc -ne 0 ]; then stop_all; fi' EXIT
  if real_node; then node_bridge_up; fi

  pick_port etcd KAITO_CLUSTER_ETCD_PORT
  pick_port etcd-peer KAITO_CLUSTER_ETCD_PEER_PORT
  pick_port kube-apiserver KAITO_CLUSTER_APISERVER_PORT
  pick_port kube-controller-manager KAITO_CLUSTER_CONTROLLER_MANAGER_PORT
  pick_port kube-scheduler KAITO_CLUSTER_SCHEDULER_PORT
  pick_port kwok KAITO_CLUSTER_KWOK_PORT
  if real_node; then
    pick_port registry KAITO_CLUSTER_REGISTRY_PORT
    pick_port kubelet KAITO_CLUSTER_KUBELET_PORT
    pick_port kubelet-healthz KAITO_CLUSTER_KUBELET_HEALTHZ_PORT
    pick_port kube-proxy-healthz KAITO_CLUSTER_KUBE_PROXY_HEALTHZ_PORT
    pick_port kube-proxy-metrics KAITO_CLUSTER_KUBE_PROXY_METRICS_PORT
    cat >"$DIR/node-ports" <<EOF
REGISTRY=${PORTS[registry]}
KUBELET=${PORTS[kubelet]}
NODE_IP=$NODE_IP
NODE_NAME=$NODE_NAME
EOF
  fi
  cat >"$DIR/ports" <<EOF
ETCD=${PORTS[etcd]}
ETCD_PEER=${PORTS[etcd-peer]}
KUBE_APISERVER=${PORTS[kube-apiserver]}
KUBE_CONTROLLER_MANAGER=${PORTS[kube-controller-manager]}
KUBE_SCHEDULER=${PORTS[kube-scheduler]}
KWOK=${PORTS[kwok]}
APISERVER_HOST=$APISERVER_HOST
EOF

  t=$(now_ms); gen_pki; log "certificates and kubeconfigs generated in $(secs_since "$t")"
  local pki="$DIR/pki" kc="$DIR/kubeconfig"

  t=$(now_ms)
  start etcd "$bin/etcd" --name=kaito-local --data-dir="$DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:${PORTS[etcd]}" \
    --advertise-client-urls="http://127.0.0.1:${PORTS[etcd]}" \
    --listen-peer-urls="http://127.0.0.1:${PORTS[etcd-peer]}" \
    --initial-advertise-peer-urls="http://127.0.0.1:${PORTS[etcd-peer]}" \
    --initial-cluster="kaito-local=http://127.0.0.1:${PORTS[etcd-peer]}" \
    --unsafe-no-fsync --quota-backend-bytes=2147483648 \
    --auto-compaction-retention=1 --log-level=warn
  wait_for etcd "etcd /health" curl_ok "http://127.0.0.1:${PORTS[etcd]}/health"
  log "etcd ready in $(secs_since "$t")"

  t=$(now_ms)
  # Without a real node nothing reaches the API server through the `kubernetes` Service; with
  # one, its Endpoints must name the node's bridge IP (the default lease reconciler does).
  local reconciler=(--endpoint-reconciler-type=none)
  if real_node; then reconciler=(--endpoint-reconciler-type=lease); fi
  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:${PORTS[etcd]}" \
    --bind-address="$APISERVER_HOST" --advertise-address="$APISERVER_HOST" --secure-port="${PORTS[kube-apiserver]}" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
    --admission-control-config-file="$DIR/admission-control.yaml" \
    --allow-privileged=true \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --kubelet-certificate-authority="$pki/ca.crt" \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --enable-aggregator-routing=true \
    "${reconciler[@]}" \
    --profiling=false --v=1
  wait_for kube-apiserver "kube-apiserver /readyz" \
    curl_ok --cacert "$pki/ca.crt" "https://$APISERVER_HOST:${PORTS[kube-apiserver]}/readyz"
  log "kube-apiserver ready in $(secs_since "$t")"

  # kwok serves logs and port-forwards from these objects; the CRDs must exist before it starts.
  t=$(now_ms)
  local k="$bin/kubectl --kubeconfig=$kc"
  local files=()
  for c in logs clusterlogs portforwards clusterportforwards execs clusterexecs attaches clusterattaches; do
    files+=(-f "$crds/kwok.x-k8s.io_$c.yaml")
  done
  $k apply "${files[@]}" >/dev/null
  $k wait --for=condition=Established --timeout=60s "${files[@]}" >/dev/null
  log "kwok CRDs established in $(secs_since "$t")"

  t=$(now_ms)
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig="$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$DIR/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="${PORTS[kube-controller-manager]}" \
    --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --kube-api-qps=100 --kube-api-burst=200 \
    --concurrent-deployment-syncs=10 --concurrent-replicaset-syncs=10 --concurrent-job-syncs=10 \
    --v=1
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig="$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig="$DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig="$DIR/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="${PORTS[kube-scheduler]}" \
    --leader-elect=false --kube-api-qps=100 --kube-api-burst=200 --v=1
  # HOME is the state dir's, so a developer's ~/.kwok/kwok.yaml is not picked up.
  HOME="$DIR/home" start kwok "$bin/kwok" \
    --kubeconfig="$kc" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector="$KWOK_ANNOTATION=$KWOK_ANNOTATION_VALUE" \
    --node-ip=127.0.0.1 --node-name=localhost --node-port="${PORTS[kwok]}" \
    --server-address="127.0.0.1:${PORTS[kwok]}" \
    --tls-cert-file="$pki/kwok.crt" --tls-private-key-file="$pki/kwok.key" \
    --cidr="$POD_CIDR" --node-lease-duration-seconds=40 \
    --enable-crds=Logs,ClusterLogs,PortForward,ClusterPortForward,Exec,ClusterExec,Attach,ClusterAttach
  wait_for kube-controller-manager "kube-controller-manager /healthz" \
    curl_ok -k "https://127.0.0.1:${PORTS[kube-controller-manager]}/healthz"
  wait_for kube-scheduler "kube-scheduler /healthz" \
    curl_ok -k "https://127.0.0.1:${PORTS[kube-scheduler]}/healthz"
  wait_for kwok "kwok /healthz" curl_ok "http://127.0.0.1:${PORTS[kwok]}/healthz"
  wait_for kube-controller-manager "the default ServiceAccount" \
    quiet $k get serviceaccount default -n default
  log "controller-manager, scheduler and kwok ready in $(secs_since "$t")"
  if real_node; then node_up "$bin"; fi
  trap - EXIT
  log "cluster up in $(secs_since "$t0") (state: $DIR)"
  print_summary
}

print_summary() {
  # shellcheck disable=SC1091
  (. "$DIR/ports"
   log "kube-apiserver https://${APISERVER_HOST:-127.0.0.1}:$KUBE_APISERVER, etcd http://127.0.0.1:$ETCD, kwok https://127.0.0.1:$KWOK"
   log "use it: eval \"\$($0 env)\"   or   KUBECONFIG=$DIR/kubeconfig")
}

need_cluster() {
  [ -f "$DIR/.kaito-cluster" ] && [ -f "$DIR/kubeconfig" ] || die "no cluster in $DIR; run: $0 up"
}

kubectl_() { need_cluster; "$(bin_dir)/kubectl" --kubeconfig="$DIR/kubeconfig" "$@"; }

cmd_status() {
  if [ ! -f "$DIR/.kaito-cluster" ]; then echo "no cluster in $DIR"; return 3; fi
  local c pid rss total=0 hwm totalhwm=0 down=0
  printf '%-24s %-8s %-10s %-10s\n' COMPONENT PID RSS_MIB PEAK_MIB
  for c in "${COMPONENTS[@]}"; do
    if pid_alive "$c"; then
      pid=$(cat "$DIR/pids/$c.pid")
      rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"); hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
      total=$((total + rss)); totalhwm=$((totalhwm + hwm))
      printf '%-24s %-8s %-10s %-10s\n' "$c" "$pid" $((rss / 1024)) $((hwm / 1024))
    else
      printf '%-24s %-8s\n' "$c" "down"; down=1
    fi
  done
  printf '%-24s %-8s %-10s %-10s\n' total "" $((total / 1024)) $((totalhwm / 1024))
  cat "$DIR/ports"
  if healthy; then echo "kube-apiserver: ready"; echo "kubeconfig: $DIR/kubeconfig"; else echo "cluster: NOT healthy"; return 1; fi
  [ "$down" = 0 ]
}

cmd_env() {
  need_cluster
  printf 'export KUBECONFIG=%q\n' "$DIR/kubeconfig"
  printf 'export PATH=%q:"$PATH"\n' "$(bin_dir)"
  printf 'export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost\n'
  printf 'export KAITO_CLUSTER_DIR=%q\n' "$DIR"
}

# Known GPU SKUs: vCPUs, memory, GPUs, product, MiB per GPU, compute capability.
sku_defaults() {
  case "$1" in
    Standard_NC6s_v3) echo "6 112Gi 1 Tesla-V100-PCIE-16GB 16384 7.0" ;;
    Standard_NC12s_v3) echo "12 224Gi 2 Tesla-V100-PCIE-16GB 16384 7.0" ;;
    Standard_NC24s_v3) echo "24 448Gi 4 Tesla-V100-PCIE-16GB 16384 7.0" ;;
    Standard_NC4as_T4_v3) echo "4 28Gi 1 Tesla-T4 16384 7.5" ;;
    Standard_NC8as_T4_v3) echo "8 56Gi 1 Tesla-T4 16384 7.5" ;;
    Standard_NC64as_T4_v3) echo "64 440Gi 4 Tesla-T4 16384 7.5" ;;
    Standard_NV36ads_A10_v5) echo "36 440Gi 1 NVIDIA-A10 24576 8.6" ;;
    Standard_NC24ads_A100_v4) echo "24 220Gi 1 NVIDIA-A100-PCIe-80GB 81920 8.0" ;;
    Standard_NC48ads_A100_v4) echo "48 440Gi 2 NVIDIA-A100-PCIe-80GB 81920 8.0" ;;
    Standard_NC96ads_A100_v4) echo "96 880Gi 4 NVIDIA-A100-PCIe-80GB 81920 8.0" ;;
    Standard_ND96asr_v4) echo "96 900Gi 8 NVIDIA-A100-SXM4-40GB 40960 8.0" ;;
    Standard_ND96amsr_A100_v4) echo "96 1900Gi 8 NVIDIA-A100-SXM4-80GB 81920 8.0" ;;
    Standard_NC40ads_H100_v5) echo "40 320Gi 1 NVIDIA-H100-NVL 95830 9.0" ;;
    Standard_ND96isr_H100_v5) echo "96 1900Gi 8 NVIDIA-H100-80GB-HBM3 81559 9.0" ;;
    *) echo "8 64Gi 1 NVIDIA-GPU 16384 7.0" ;;
  esac
}

# The labels a GPU node of this size carries (instance type, NVIDIA GPU feature discovery's).
gpu_labels() { # sku gpus product gpu-memory-mib compute-capability
  printf '%s\n' "node.kubernetes.io/instance-type=$1" "beta.kubernetes.io/instance-type=$1" \
    accelerator=nvidia nvidia.com/gpu.present=true "nvidia.com/gpu.product=$3" \
    "nvidia.com/gpu.count=$2" "nvidia.com/gpu.memory=$4" \
    "nvidia.com/cuda.compute.major=${5%%.*}" "nvidia.com/cuda.compute.minor=${5#*.}"
}

# The real node as a GPU node of a size: its labels, and `nvidia.com/gpu` advertised in its
# status as an extended resource (what the device plugin would do). Its containers still run on
# the CPU: the runtime falls back to it.
cmd_advertise_gpus() {
  need_cluster
  real_node || die "no real node in $DIR (up --real-node)"
  local sku=Standard_NC6s_v3 gpus="" labels=() t name
  name=$(. "$DIR/node-ports"; echo "$NODE_NAME")
  while [ $# -gt 0 ]; do
    case "$1" in
      --sku) sku=$2; shift 2 ;;
      --gpus) gpus=$2; shift 2 ;;
      --label) [[ $2 == *=* ]] || die "--label wants k=v, got '$2'"; labels+=("$2"); shift 2 ;;
      *) die "advertise-gpus: unknown option $1" ;;
    esac
  done
  local d_cpu d_mem d_gpus d_product d_gmem d_cc
  read -r d_cpu d_mem d_gpus d_product d_gmem d_cc <<<"$(sku_defaults "$sku")"
  gpus=${gpus:-$d_gpus}
  [[ $gpus =~ ^[0-9]+$ ]] || die "--gpus wants a number, got '$gpus'"
  mapfile -t t < <(gpu_labels "$sku" "$gpus" "$d_product" "$d_gmem" "$d_cc")
  kubectl_ label node "$name" --overwrite "${t[@]}" "${labels[@]}" >/dev/null
  kubectl_ patch node "$name" --subresource=status --type=merge \
    -p "{\"status\":{\"capacity\":{\"nvidia.com/gpu\":\"$gpus\"},\"allocatable\":{\"nvidia.com/gpu\":\"$gpus\"}}}" >/dev/null
  echo "node/$name"
}

cmd_add_gpu_node() {
  need_cluster
  [ $# -ge 1 ] && [[ $1 != -* ]] || die "usage: $0 add-gpu-node NAME [--sku S] [--gpus N] ..."
  local name=$1; shift
  local sku=Standard_NC6s_v3 cpu="" mem="" gpus="" product="" gmem="" cc="" pods=110 pool=""
  local labels=() taints=() notaint=0 set_taints=0 wait=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --sku) sku=$2; shift 2 ;;
      --gpus) gpus=$2; shift 2 ;;
      --gpu-memory-mib) gmem=$2; shift 2 ;;
      --product) product=$2; shift 2 ;;
      --cc) cc=$2; shift 2 ;;
      --cpu) cpu=$2; shift 2 ;;
      --memory) mem=$2; shift 2 ;;
      --pods) pods=$2; shift 2 ;;
      --agentpool) pool=$2; shift 2 ;;
      --label) [[ $2 == *=* ]] || die "--label wants k=v, got '$2'"; labels+=("$2"); shift 2 ;;
      --taint) [[ $2 =~ ^[^=:]+(=[^:]*)?:(NoSchedule|PreferNoSchedule|NoExecute)$ ]] \
                 || die "--taint wants key=value:Effect, got '$2'"; taints+=("$2"); set_taints=1; shift 2 ;;
      --no-taint) notaint=1; shift ;;
      --no-wait) wait=0; shift ;;
      *) die "add-gpu-node: unknown option $1" ;;
    esac
  done
  local d_cpu d_mem d_gpus d_product d_gmem d_cc
  read -r d_cpu d_mem d_gpus d_product d_gmem d_cc <<<"$(sku_defaults "$sku")"
  cpu=${cpu:-$d_cpu}; mem=${mem:-$d_mem}; gpus=${gpus:-$d_gpus}; product=${product:-$d_product}
  gmem=${gmem:-$d_gmem}; cc=${cc:-$d_cc}
  [[ $gpus =~ ^[0-9]+$ ]] || die "--gpus wants a number, got '$gpus'"
  [[ $gmem =~ ^[0-9]+$ ]] || die "--gpu-memory-mib wants a number, got '$gmem'"
  [[ $cc =~ ^[0-9]+\.[0-9]+$ ]] || die "--cc wants MAJOR.MINOR, got '$cc'"
  [ "$set_taints" = 1 ] || taints=("sku=gpu:NoSchedule")
  [ "$notaint" = 1 ] && taints=()

  local q='"' lbl="" t tk tv te taint_yaml=""
  add_label() { lbl+="    ${q}$1${q}: ${q}$2${q}"$'\n'; }
  add_label kubernetes.io/hostname "$name"
  add_label kubernetes.io/os linux
  add_label kubernetes.io/arch amd64
  add_label type kwok
  while IFS= read -r t; do add_label "${t%%=*}" "${t#*=}"; done < <(gpu_labels "$sku" "$gpus" "$product" "$gmem" "$cc")
  [ -n "$pool" ] && add_label kubernetes.azure.com/agentpool "$pool" && add_label agentpool "$pool"
  for t in "${labels[@]}"; do add_label "${t%%=*}" "${t#*=}"; done
  for t in "${taints[@]}"; do
    te=${t##*:}; tk=${t%:*}; tv=""
    if [[ $tk == *=* ]]; then tv=${tk#*=}; tk=${tk%%=*}; fi
    taint_yaml+="  - key: ${q}$tk${q}"$'\n'"    value: ${q}$tv${q}"$'\n'"    effect: $te"$'\n'
  done
  local spec="spec: {}"
  [ -n "$taint_yaml" ] && spec="spec:"$'\n'"  taints:"$'\n'"$taint_yaml"
  local res="    cpu: ${q}$cpu${q}"$'\n'"    memory: ${q}$mem${q}"$'\n'"    pods: ${q}$pods${q}"$'\n'"    nvidia.com/gpu: ${q}$gpus${q}"$'\n'"    ephemeral-storage: ${q}1Ti${q}"
  kubectl_ apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    $KWOK_ANNOTATION: $KWOK_ANNOTATION_VALUE
    node.alpha.kubernetes.io/ttl: "0"
  labels:
$lbl$spec
status:
  capacity:
$res
  allocatable:
$res
EOF
  if [ "$wait" = 1 ]; then
    kubectl_ wait --for=condition=Ready "node/$name" --timeout=60s >/dev/null
  fi
  echo "node/$name"
}

lock_holders() { # pids that have the lock file open, except this shell
  local f p
  for f in /proc/[0-9]*/fd/*; do
    [ "$(readlink "$f" 2>/dev/null)" = "$DIR.lock" ] || continue
    p=${f#/proc/}; p=${p%%/*}
    [ "$p" = "$$" ] || echo "$p"
  done | sort -u
}

components_hold_lock() { # the bug of older versions: the cluster's processes inherited the lock
  local p c
  for p in $(lock_holders); do
    for c in "${COMPONENTS[@]}"; do
      [ -f "$DIR/pids/$c.pid" ] && [ "$(cat "$DIR/pids/$c.pid")" = "$p" ] && return 0
    done
  done
  return 1
}

with_lock() { # run "$@" holding the state dir's lock, so concurrent callers share one cluster
  mkdir -p "$(dirname "$DIR")"
  exec 9>"$DIR.lock"
  if ! flock -w 2 9; then
    # A cluster started by an older cluster.sh let its processes inherit the lock.
    if components_hold_lock; then
      log "the lock is held by the cluster's own processes (started by an older cluster.sh); going on"
    else
      log "waiting for $DIR.lock (held by pid $(lock_holders | tr '\n' ' '))"
      flock -w "${KAITO_CLUSTER_LOCK_TIMEOUT:-1800}" 9 || die "timed out waiting for $DIR.lock"
    fi
  fi
  "$@"
}

usage() { sed -n '2,44p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

case "${1:-}" in
  up) shift; with_lock cmd_up "$@" ;;
  down) shift; with_lock cmd_down "$@" ;;
  status) shift; cmd_status "$@" ;;
  env) shift; cmd_env "$@" ;;
  kubeconfig) need_cluster; echo "$DIR/kubeconfig" ;;
  bin) bin_dir ;;
  dir) echo "$DIR" ;;
  kubectl) shift; kubectl_ "$@" ;;
  registry) need_cluster; real_node || die "no real node in $DIR (up --real-node)"
            (. "$DIR/node-ports"; echo "$NODE_IP:$REGISTRY") ;;
  node-name) need_cluster; real_node || die "no real node in $DIR (up --real-node)"
             (. "$DIR/node-ports"; echo "$NODE_NAME") ;;
  __node-inner) node_inner ;;
  add-gpu-node) shift; cmd_add_gpu_node "$@" ;;
  advertise-gpus) shift; cmd_advertise_gpus "$@" ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
