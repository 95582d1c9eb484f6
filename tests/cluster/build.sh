#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules and caches them.
#
#   tests/cluster/build.sh          # prints the bin directory (builds on first use)
#
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet and kube-proxy come from
# k8s.io/kubernetes through the wrapper module in gomod/k8s (it pins the staging
# modules); etcd from gomod/etcd; kwok and helm with `go install pkg@version`.
# The cache key is a hash of the versions and the wrapper modules, so changing a
# version rebuilds and an unchanged tree costs nothing.
set -euo pipefail

K8S_VERSION=v1.34.4
KWOK_VERSION=v0.7.0
HELM_VERSION=v3.19.5

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
key=$( (echo "$K8S_VERSION $KWOK_VERSION $HELM_VERSION"; cat "$here"/gomod/*/go.mod "$here"/gomod/*/go.sum "$here"/gomod/*/*.go) | sha256sum | cut -c1-16)
bin="${KAITO_CLUSTER_CACHE:-$HOME/.cache/kaito-rs/cluster}/$K8S_VERSION-$key/bin"

log() { printf '[cluster build] %s\n' "$*" >&2; }

build_k8s() {
  local name=$1 pkg=$2
  [ -x "$bin/$name" ] && return 0
  log "building $name $K8S_VERSION (first run only)"
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local v=k8s.io/component-base/version
  (cd "$here/gomod/k8s" && go build -trimpath -o "$bin/$name.tmp" \
    -ldflags "-s -w -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean" \
    "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
}

go_install() {
  local name=$1 pkg=$2 ldflags=${3:-}
  [ -x "$bin/$name" ] && return 0
  log "building $name from $pkg"
  local tmp; tmp=$(mktemp -d)
  GOBIN="$tmp" go install -trimpath -ldflags "-s -w $ldflags" "$pkg"
  mv "$tmp/$name" "$bin/$name"; rmdir "$tmp"
}

# kwok's CRDs (Logs, PortForward, ...) from the same module version, for cluster.sh.
install_kwok_crds() {
  local dest="$bin/../share/kwok/crd"
  [ -f "$dest/kwok.x-k8s.io_logs.yaml" ] && return 0
  log "copying kwok $KWOK_VERSION CRDs"
  local dir tmp; tmp=$(mktemp -d)
  dir=$(cd "$tmp" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  rmdir "$tmp"
  [ -d "$dir/kustomize/crd/bases" ] || { echo "kwok module source not found (got '$dir')" >&2; return 1; }
  rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
  cp "$dir"/kustomize/crd/bases/*.yaml "$dest.tmp/"
  chmod -R u+w "$dest.tmp"
  mv "$dest.tmp" "$dest"
}

# The real node's pause (sandbox) image binary: Kubernetes' own build/pause/linux/pause.c from
# the same module, linked statically so the image holds nothing else.
build_pause() {
  [ -x "$bin/pause" ] && return 0
  command -v cc >/dev/null || { echo "a C compiler (cc) is needed to build the pause binary" >&2; return 1; }
  local src
  src=$(cd "$here/gomod/k8s" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
  log "building pause from $src"
  cc -Os -static -DVERSION="$K8S_VERSION" -o "$bin/pause.tmp" "$src"
  mv "$bin/pause.tmp" "$bin/pause"
}

command -v go >/dev/null || { echo "go is required to build the local control plane" >&2; exit 1; }
mkdir -p "$bin"
start=$(date +%s)
(cd "$here/gomod/etcd" && [ -x "$bin/etcd" ] || { log "building etcd"; go build -trimpath -ldflags "-s -w" -o "$bin/etcd" .; })
build_k8s kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build_k8s kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build_k8s kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build_k8s kubectl k8s.io/kubernetes/cmd/kubectl
# The real node (cluster.sh up --real-node): a kubelet and kube-proxy from the same module.
build_k8s kubelet k8s.io/kubernetes/cmd/kubelet
build_k8s kube-proxy k8s.io/kubernetes/cmd/kube-proxy
go_install kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
go_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
install_kwok_crds
build_pause
took=$(( $(date +%s) - start ))
[ "$took" -gt 5 ] && log "control-plane binaries ready in ${took}s: $bin"
echo "$bin"
