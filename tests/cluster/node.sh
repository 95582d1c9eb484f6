# shellcheck shell=bash
# The real node of the local cluster (`cluster.sh up --real-node`), sourced by cluster.sh.
#
# A kubelet and kube-proxy built from the same Kubernetes module as the control plane, Debian's
# containerd + runc as the container runtime, Debian's CNI plugins (bridge + host-local +
# portmap) on a bridge this script owns, and a plain-HTTP OCI registry (Debian's
# docker-registry) on the bridge that containerd pulls the repository's images from.
#
# The host is left as found: the kubelet and containerd run in a private mount namespace where
# the sysctls the kubelet insists on writing are masked by files and the host paths they
# hard-code (/var/lib/kubelet, /var/log/containers, /var/lib/cni, /run/netns) are private
# directories under the state dir; the kubelet makes no iptables chains
# (makeIPTablesUtilChains: false); `down` removes kube-proxy's and the portmap plugin's rules,
# the cgroups the kubelet created, the bridge, and restores net.ipv4.ip_forward (the bridge
# plugin sets it). Only one real node runs at a time on a machine (the bridge name is the lock).
#
# Needs: Linux, root, containerd, runc, ctr, buildah, iptables, ip, unshare,
# /usr/lib/cni/{bridge,host-local,portmap,loopback}, docker-registry (the test command installs
# the Debian packages).

NODE_BRIDGE=${KAITO_CLUSTER_NODE_BRIDGE:-kaito0}
NODE_NET=${KAITO_CLUSTER_NODE_NET:-10.88.77}
NODE_IP=$NODE_NET.1
NODE_POD_CIDR=$NODE_NET.0/24
NODE_NAME=${KAITO_CLUSTER_NODE_NAME:-kaito-node-1}
NODE_CNI_DIR=${KAITO_CLUSTER_CNI_DIR:-/usr/lib/cni}
NODE_COMPONENTS=(registry containerd kubelet kube-proxy)
# Host paths the kubelet, containerd and libcni use whatever their configuration says.
NODE_HOST_PATHS=(/var/lib/kubelet /var/log/containers /var/lib/cni /run/netns)
# The values the kubelet wants for these sysctls (it writes them unless they already match).
NODE_SYSCTLS=(vm/overcommit_memory=1 kernel/panic=10 kernel/panic_on_oops=1)

real_node() { [ -f "$DIR/real-node" ]; }

node_preflight() {
  local missing=() b
  [ "$(uname -s)" = Linux ] || die "the real node needs Linux (this is $(uname -s)); use the simulated (kwok) nodes: $0 up"
  [ "$(id -u)" = 0 ] || die "the real node needs root (containerd, runc, a bridge, iptables); run as root or use the simulated (kwok) nodes: $0 up"
  for b in containerd runc ctr buildah iptables ip unshare docker-registry; do
    command -v "$b" >/dev/null || missing+=("$b")
  done
  for b in bridge host-local portmap loopback; do
    [ -x "$NODE_CNI_DIR/$b" ] || missing+=("$NODE_CNI_DIR/$b")
  done
  [ ${#missing[@]} = 0 ] || die "the real node needs: ${missing[*]} (Debian: apt-get install containerd runc buildah containernetworking-plugins docker-registry iptables)"
  if ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    die "bridge $NODE_BRIDGE already exists: another real node is running on this machine (stop it with its cluster.sh down), or set KAITO_CLUSTER_NODE_BRIDGE and KAITO_CLUSTER_NODE_NET"
  fi
}

# The bridge must exist before the API server binds to its address.
node_bridge_up() {
  mkdir -p "$DIR/node"
  cat /proc/sys/net/ipv4/ip_forward >"$DIR/node/ip_forward.orig"
  ip link add "$NODE_BRIDGE" type bridge
  echo "$NODE_BRIDGE" >"$DIR/node/bridge"
  ip addr add "$NODE_IP/24" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
}

node_pki() { # the kubelet's client and serving certificates, kube-proxy's client certificate
  local ku="keyUsage=critical,digitalSignature,keyEncipherment"
  cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" "$ku" "extendedKeyUsage=clientAuth"
  cert kubelet-serving "/O=system:nodes/CN=system:node:$NODE_NAME" "$ku" "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:$NODE_IP,IP:127.0.0.1,DNS:$NODE_NAME,DNS:localhost"
  cert kube-proxy "/CN=system:kube-proxy" "$ku" "extendedKeyUsage=clientAuth"
  kubeconfig_file "$DIR/kubelet.kubeconfig" "system:node:$NODE_NAME" "$DIR/pki/kubelet-client.crt" "$DIR/pki/kubelet-client.key"
  kubeconfig_file "$DIR/kube-proxy.kubeconfig" system:kube-proxy "$DIR/pki/kube-proxy.crt" "$DIR/pki/kube-proxy.key"
}

node_configs() {
  local n="$DIR/node" reg="$NODE_IP:${PORTS[registry]}"
  mkdir -p "$n"/{containerd/root,containerd/state,containerd/opt,containerd/runc,cni/net.d,cni/ipam,kubelet,pod-logs,sysctl,hostdirs,registry,buildah,certs.d/"$reg",certs.d/docker.io}
  cat >"$n/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $n/registry
  delete:
    enabled: true
http:
  addr: $reg
EOF
  cat >"$n/certs.d/$reg/hosts.toml" <<EOF
server = "http://$reg"
[host."http://$reg"]
  capabilities = ["pull", "resolve"]
EOF
  # docker.io is mirrored by the local registry (nothing public is reachable): what is pushed
  # there as curlimages/curl is what `--image=curlimages/curl` gets.
  cat >"$n/certs.d/docker.io/hosts.toml" <<EOF
server = "https://registry-1.docker.io"
[host."http://$reg"]
  capabilities = ["pull", "resolve"]
EOF
  cat >"$n/containerd.toml" <<EOF
version = 2
root = "$n/containerd/root"
state = "$n/containerd/state"
[grpc]
  address = "$n/containerd/containerd.sock"
[ttrpc]
  address = "$n/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$n/containerd/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$reg/pause:$K8S_PAUSE_TAG"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    # This machine kind has no CAP_SYS_RESOURCE: runc cannot lower oom_score_adj otherwise.
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "$n/containerd/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$NODE_CNI_DIR"
      conf_dir = "$n/cni/net.d"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "$n/certs.d"
EOF
  cat >"$n/cni/net.d/10-kaito.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "kaito-local",
  "plugins": [
    {"type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$n/cni/ipam",
              "ranges": [[{"subnet": "$NODE_POD_CIDR", "rangeStart": "$NODE_NET.10", "gateway": "$NODE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cp /etc/resolv.conf "$n/resolv.conf" 2>/dev/null || : >"$n/resolv.conf"
  cat >"$n/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: ${PORTS[kubelet]}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${PORTS[kubelet-healthz]}
tlsCertFile: $DIR/pki/kubelet-serving.crt
tlsPrivateKeyFile: $DIR/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $DIR/pki/ca.crt}
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$n/containerd/containerd.sock
resolvConf: $n/resolv.conf
podLogsDir: $n/pod-logs
makeIPTablesUtilChains: false
serializeImagePulls: false
clusterDomain: cluster.local
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
maxPods: 30
EOF
}

# Runs inside the node's private mount namespace (cluster.sh __node-inner): masks, private
# host paths, containerd, then the kubelet; it waits for both, so the namespace lives as long
# as they do.
node_inner() {
  local n="$DIR/node" kv k v h d
  for kv in "${NODE_SYSCTLS[@]}"; do
    k=${kv%%=*}; v=${kv#*=}
    echo "$v" >"$n/sysctl/${k//\//_}"
    mount --bind "$n/sysctl/${k//\//_}" "/proc/sys/$k"
  done
  for d in "${NODE_HOST_PATHS[@]}"; do
    h="$n/hostdirs/${d//\//_}"; mkdir -p "$h"
    mount --bind "$h" "$d"
  done
  start containerd containerd --config "$n/containerd.toml" --log-level warn
  local i
  for i in $(seq 1 300); do [ -S "$n/containerd/containerd.sock" ] && break; sleep 0.1; done
  start kubelet "$(cat "$DIR/bin")/kubelet" --config="$n/kubelet.yaml" --kubeconfig="$DIR/kubelet.kubeconfig" \
    --root-dir="$n/kubelet" --cert-dir="$n/kubelet/pki" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
  wait
}

node_mountpoints() { # empty mount points on the host; the ones made here are removed by down
  local d
  for d in "${NODE_HOST_PATHS[@]}"; do
    if [ ! -e "$d" ]; then mkdir -p "$d"; echo "$d" >>"$DIR/node/made-mountpoints"; fi
  done
}

# An image of the directory ROOT (as its /) with the given `buildah config` options, pushed to
# the node's registry as REPO:TAG.
node_push_image() { # ROOT REPO:TAG CONFIG-OPTIONS...
  local root=$1 ref=$2 b c; shift 2
  b=(buildah --storage-driver vfs --root "$DIR/node/buildah/root" --runroot "$DIR/node/buildah/run")
  c=$("${b[@]}" from scratch)
  "${b[@]}" copy "$c" "$root" / >/dev/null
  "${b[@]}" config "$@" "$c"
  "${b[@]}" commit -q "$c" "localhost/$ref" >/dev/null
  "${b[@]}" rm "$c" >/dev/null
  "${b[@]}" push -q --tls-verify=false "localhost/$ref" "docker://$NODE_IP:${PORTS[registry]}/$ref"
}

# The pause (sandbox) image: Kubernetes' pause binary alone.
node_pause_image() { # bin
  local root="$DIR/node/pause-root"
  mkdir -p "$root"
  cp "$1/pause" "$root/pause"
  node_push_image "$root" "pause:$K8S_PAUSE_TAG" --entrypoint '["/pause"]' --user 65535:65535
  rm -rf "$root"
}

# `curlimages/curl` for the guides' `kubectl run ... --image=curlimages/curl -- curl ...`: the
# host's real curl with the shared libraries it loads and CA certificates, in the local registry
# that mirrors docker.io.
node_curl_image() {
  local root="$DIR/node/curl-root" curl_bin lib
  curl_bin=$(command -v curl)
  mkdir -p "$root/usr/bin" "$root/etc/ssl/certs" "$root/tmp"
  chmod 1777 "$root/tmp"
  cp "$curl_bin" "$root/usr/bin/curl"
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\ncurl_user:x:100:101:curl:/home/curl_user:/sbin/nologin\n' >"$root/etc/passwd"
  for lib in $(ldd "$curl_bin" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  # No entrypoint, like the real image's behaviour for `-- curl ARGS`: the arguments are the
  # command, found on PATH.
  node_push_image "$root" curlimages/curl:latest --cmd '["curl", "--help"]' --user 100:101 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  rm -rf "$root"
}

node_up() { # bin
  local bin=$1 t k="$1/kubectl --kubeconfig=$DIR/kubeconfig"
  t=$(now_ms)
  node_pki
  node_configs
  start registry docker-registry serve "$DIR/node/registry.yml"
  wait_for registry "the registry's /v2/" curl_ok "http://$NODE_IP:${PORTS[registry]}/v2/"
  node_pause_image "$bin"
  node_curl_image
  node_mountpoints
  # The namespace holder: containerd and the kubelet run as its children (node_inner).
  start node-ns unshare --mount --propagation slave -- bash "$here/cluster.sh" __node-inner
  wait_for node-ns "containerd and the kubelet to start" test -f "$DIR/pids/kubelet.pid"
  start kube-proxy "$bin/kube-proxy" --kubeconfig="$DIR/kube-proxy.kubeconfig" \
    --hostname-override="$NODE_NAME" --proxy-mode=iptables --bind-address="$NODE_IP" \
    --cluster-cidr="$NODE_POD_CIDR" --nodeport-addresses="$NODE_POD_CIDR" --iptables-localhost-nodeports=false \
    --conntrack-max-per-core=0 --conntrack-min=0 --conntrack-tcp-timeout-established=0s \
    --conntrack-tcp-timeout-close-wait=0s \
    --healthz-bind-address="127.0.0.1:${PORTS[kube-proxy-healthz]}" \
    --metrics-bind-address="127.0.0.1:${PORTS[kube-proxy-metrics]}" --v=1
  wait_for kubelet "node $NODE_NAME to register" quiet $k get node "$NODE_NAME"
  wait_for kubelet "node $NODE_NAME to turn Ready" quiet $k wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
  wait_for kube-proxy "kube-proxy /healthz" curl_ok "http://127.0.0.1:${PORTS[kube-proxy-healthz]}/healthz"
  log "real node $NODE_NAME ready in $(secs_since "$t") (containerd + kubelet, pods on $NODE_POD_CIDR, registry $NODE_IP:${PORTS[registry]})"
}

stop_pid() { # name: TERM, then KILL after 15 s; only a process this cluster started
  local c=$1 p
  pid_alive "$c" || { rm -f "$DIR/pids/$c.pid" "$DIR/pids/$c.start"; return 0; }
  p=$(cat "$DIR/pids/$c.pid")
  kill -TERM "$p" 2>/dev/null || true
  local deadline=$(( $(date +%s) + 15 ))
  while pid_alive "$c"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then kill -KILL "$p" 2>/dev/null || true; sleep 0.2; break; fi
    sleep 0.1
  done
  pid_alive "$c" && die "$c (pid $p) is still running"
  rm -f "$DIR/pids/$c.pid" "$DIR/pids/$c.start"
}

node_down() {
  [ -d "$DIR/node" ] || return 0
  local n="$DIR/node" ctr_ t d p
  stop_pid kube-proxy
  stop_pid kubelet
  # The pods' containers: their shims outlive containerd unless their tasks are removed.
  if pid_alive containerd; then
    ctr_=(ctr -a "$n/containerd/containerd.sock" -n k8s.io)
    for t in $("${ctr_[@]}" tasks ls -q 2>/dev/null); do
      "${ctr_[@]}" tasks kill -s KILL "$t" >/dev/null 2>&1 || true
    done
    for t in $("${ctr_[@]}" tasks ls -q 2>/dev/null); do
      for _ in $(seq 1 20); do "${ctr_[@]}" tasks rm -f "$t" >/dev/null 2>&1 && break; sleep 0.2; done
    done
  fi
  stop_pid containerd
  stop_pid node-ns
  stop_pid registry
  # kube-proxy's rules (the binary cleans up after itself), then what remains of the kubelet's
  # and the portmap plugin's.
  if [ -x "$(cat "$DIR/bin" 2>/dev/null)/kube-proxy" ]; then
    "$(cat "$DIR/bin")/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  iptables -D INPUT -j KUBE-FIREWALL 2>/dev/null || true
  iptables -D OUTPUT -j KUBE-FIREWALL 2>/dev/null || true
  iptables -t nat -D PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT 2>/dev/null || true
  iptables -t nat -D OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT 2>/dev/null || true
  iptables -t nat -D POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ 2>/dev/null || true
  for t in KUBE-FIREWALL KUBE-KUBELET-CANARY; do iptables -F "$t" 2>/dev/null || true; iptables -X "$t" 2>/dev/null || true; done
  for t in CNI-HOSTPORT-DNAT CNI-HOSTPORT-MASQ CNI-HOSTPORT-SETMARK KUBE-KUBELET-CANARY; do
    iptables -t nat -F "$t" 2>/dev/null || true; iptables -t nat -X "$t" 2>/dev/null || true
  done
  for t in KUBE-IPTABLES-HINT KUBE-KUBELET-CANARY; do
    iptables -t mangle -X "$t" 2>/dev/null || true; ip6tables -t mangle -X "$t" 2>/dev/null || true
  done
  # The cgroups the kubelet made (cgroupfs driver), leaves first.
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    if [ -d "$d" ]; then find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
  done
  if [ -f "$n/bridge" ]; then ip link del "$(cat "$n/bridge")" 2>/dev/null || true; fi
  if [ -f "$n/made-mountpoints" ]; then
    while read -r p; do rmdir "$p" 2>/dev/null || true; done <"$n/made-mountpoints"
  fi
  if [ -f "$n/ip_forward.orig" ]; then echo "$(cat "$n/ip_forward.orig")" >/proc/sys/net/ipv4/ip_forward; fi
  rm -rf "$n"
}
