//! Nodes: which nodes belong to a workspace, which are ready, and the Karpenter NodeClaim
//! builder (pure).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kaito_api::{LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE, Workspace};
use kaito_presets::skus::{LABEL_GPU_COUNT, LABEL_GPU_PRODUCT};
use serde_json::{Value, json};

use crate::config::KarpenterConfig;
use crate::naming;
use crate::plan::WorkspacePlan;

/// The GPU extended resource.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// NodePool label every claim carries (its value: `--karpenter-node-pool-name`).
pub const NODEPOOL_LABEL: &str = "karpenter.sh/nodepool";

/// GPUs a node offers to pods (`allocatable["nvidia.com/gpu"]`), 0 when absent or unparsable.
pub fn allocatable_gpus(node: &Node) -> u64 {
    node.status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get(GPU_RESOURCE))
        .and_then(|q| q.0.trim().parse().ok())
        .unwrap_or(0)
}

/// A node is ready for a workspace when its `Ready` condition is True, it is not being
/// deleted or cordoned, and — `gpu`: for a GPU workspace, not one on a CPU-only size — it has
/// allocatable GPUs.
pub fn node_ready(node: &Node, gpu: bool) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    ready
        && !cordoned
        && node.metadata.deletion_timestamp.is_none()
        && (!gpu || allocatable_gpus(node) > 0)
}

/// What the controller reads of a node, hashed: labels, taints, cordon, deletion, the Ready
/// condition's status and the allocatable resources. Node status heartbeats (kubelet, or kwok
/// every ~20 s) change none of it, so an event whose fingerprint equals the last one seen for
/// that node need not wake any workspace: with 500 workspaces on 63 nodes the heartbeats alone
/// caused ~29 reconciles/s on an idle cluster.
pub fn node_fingerprint(node: &Node) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    node.metadata.labels.hash(&mut h);
    node.metadata.deletion_timestamp.is_some().hash(&mut h);
    if let Some(spec) = &node.spec {
        spec.unschedulable.hash(&mut h);
        for t in spec.taints.iter().flatten() {
            (&t.key, &t.value, &t.effect).hash(&mut h);
        }
    }
    if let Some(status) = &node.status {
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.as_str());
        ready.hash(&mut h);
        for (k, q) in status.allocatable.iter().flatten() {
            (k, &q.0).hash(&mut h);
        }
    }
    h.finish()
}

/// Drops what the controller never reads of a node before it enters the node store: managed
/// fields, annotations, the image list (often the bulk of a GPU node's status), node info,
/// addresses, volumes, every condition but Ready, and the spec beyond taints and cordon. The
/// census, the byo shape (labels) and [`node_fingerprint`] see the same node before and after.
pub fn project_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    node.metadata.annotations = None;
    node.metadata.owner_references = None;
    if let Some(spec) = node.spec.as_mut() {
        *spec = k8s_openapi::api::core::v1::NodeSpec {
            taints: spec.taints.take(),
            unschedulable: spec.unschedulable,
            ..Default::default()
        };
    }
    if let Some(status) = node.status.as_mut() {
        let ready: Option<Vec<_>> = status
            .conditions
            .take()
            .map(|cs| cs.into_iter().filter(|c| c.type_ == "Ready").collect());
        *status = k8s_openapi::api::core::v1::NodeStatus {
            allocatable: status.allocatable.take(),
            conditions: ready,
            ..Default::default()
        };
    }
}

/// Whether `labels` satisfy the workspace's label selector (matchLabels and
/// matchExpressions).
pub fn selector_matches(ws: &Workspace, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = &ws.resource.label_selector else {
        return false;
    };
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let have = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    let non_empty = sel.match_labels.as_ref().is_some_and(|m| !m.is_empty())
        || sel
            .match_expressions
            .as_ref()
            .is_some_and(|m| !m.is_empty());
    non_empty && labels_ok && exprs_ok
}

/// Whether a node was provisioned for `ws` (carries both workspace labels).
pub fn provisioned_for(ws: &Workspace, labels: &BTreeMap<String, String>) -> bool {
    labels.get(LABEL_WORKSPACE).map(String::as_str) == Some(naming::name(ws))
        && labels.get(LABEL_WORKSPACE_NAMESPACE).map(String::as_str) == Some(naming::namespace(ws))
}

/// Whether a node carries the GPU-feature-discovery labels sizing reads.
pub fn has_gfd_labels(labels: &BTreeMap<String, String>) -> bool {
    labels.contains_key(LABEL_GPU_PRODUCT) && labels.contains_key(LABEL_GPU_COUNT)
}

/// Node census for one workspace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCensus {
    /// Names of matching nodes that are ready, sorted.
    pub ready: Vec<String>,
    /// Matching nodes that are not ready, with why, sorted by name.
    pub not_ready: Vec<(String, String)>,
    /// Nodes matching the selector but without GPU-feature-discovery labels (byo only).
    pub unlabelled: Vec<String>,
    /// The workspace runs on a CPU-only size: its nodes need no GPU.
    pub cpu_only: bool,
}

impl NodeCensus {
    /// What the nodes are, for messages: `GPU` or `CPU-only`.
    pub fn node_kind(&self) -> &'static str {
        if self.cpu_only { "CPU-only" } else { "GPU" }
    }
}

/// Sorts `nodes` into ready / not ready for `ws`. `byo`: match the user's selector and (on a
/// GPU size) require GFD labels; otherwise: match the workspace labels the provisioner put on
/// its nodes. `cpu_only`: the workspace asks for a CPU-only size, so its nodes need neither
/// GPUs nor GFD labels.
pub fn census<'a>(
    ws: &Workspace,
    nodes: impl IntoIterator<Item = &'a Node>,
    byo: bool,
    cpu_only: bool,
) -> NodeCensus {
    let mut c = NodeCensus {
        cpu_only,
        ..NodeCensus::default()
    };
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let mine = if byo {
            selector_matches(ws, &labels)
        } else {
            provisioned_for(ws, &labels)
        };
        if !mine {
            continue;
        }
        if byo && !cpu_only && !has_gfd_labels(&labels) {
            c.unlabelled.push(name);
            continue;
        }
        if node_ready(node, !cpu_only) {
            c.ready.push(name);
        } else {
            let why = if !cpu_only && allocatable_gpus(node) == 0 {
                "no allocatable nvidia.com/gpu (is the NVIDIA device plugin running?)"
            } else {
                "not Ready"
            };
            c.not_ready.push((name, why.into()));
        }
    }
    c.ready.sort();
    c.not_ready.sort();
    c.unlabelled.sort();
    c
}

/// The NodeClaim API group/version.
pub const NODECLAIM_API_VERSION: &str = "karpenter.sh/v1";

/// The `index`-th `karpenter.sh/v1` NodeClaim of a workspace. Cluster-scoped, so it cannot
/// carry an owner reference to the namespaced Workspace: the finalizer deletes it instead.
/// Its `nodeClassRef` is the cloud's NodeClass of the configured name, its NodePool label the
/// configured NodePool. A GPU node is tainted `sku=gpu:NoSchedule` (GPU pods tolerate it); a
/// CPU-only node is not, as the serving pod on it carries no GPU toleration.
pub fn nodeclaim(ws: &Workspace, plan: &WorkspacePlan, cfg: &KarpenterConfig, index: u32) -> Value {
    let mut labels = ws.match_labels();
    labels.extend(naming::workspace_labels(ws));
    labels.insert(naming::LABEL_WORKSPACE_UID.into(), naming::uid(ws).into());
    labels.insert(NODEPOOL_LABEL.into(), cfg.node_pool.clone());
    let disk_gib = plan
        .preset
        .as_ref()
        .map(|p| p.disk.as_gib().ceil() as u64)
        .unwrap_or(0)
        .max(128);
    let class = &cfg.node_class;
    let mut claim = json!({
        "apiVersion": NODECLAIM_API_VERSION,
        "kind": "NodeClaim",
        "metadata": {
            "name": naming::nodeclaim_name(naming::namespace(ws), naming::name(ws), index),
            "labels": labels,
        },
        "spec": {
            "nodeClassRef": {"group": class.group, "kind": class.kind, "name": class.name},
            "requirements": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [plan.instance_type]},
                {"key": NODEPOOL_LABEL, "operator": "In", "values": [cfg.node_pool]},
            ],
            "resources": {"requests": {"storage": format!("{disk_gib}Gi")}},
        }
    });
    if !plan.cpu_only() {
        claim["spec"]["taints"] = json!([{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]);
    }
    claim
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cloud, Config, Provisioner};
    use crate::plan::plan;
    use crate::testutil::{obj, ws};

    #[test]
    fn node_fingerprint_ignores_heartbeats_and_sees_what_the_controller_reads() {
        let base = "metadata: {name: a, labels: {apps: phi-3}}\n\
                    spec: {taints: [{key: sku, value: gpu, effect: NoSchedule}]}\n\
                    status:\n  allocatable: {nvidia.com/gpu: \"1\", cpu: \"4\"}\n  \
                    conditions: [{type: Ready, status: \"True\", lastHeartbeatTime: \"2026-11-23T10:00:00Z\"}]";
        let fp = |yaml: &str| node_fingerprint(&obj::<Node>(yaml));
        let before = fp(base);
        let heartbeat = base.replace("10:00:00Z", "10:00:20Z");
        assert_eq!(fp(&heartbeat), before, "a heartbeat alone changes nothing");
        for (what, changed) in [
            ("a label", base.replace("apps: phi-3", "apps: phi-4")),
            (
                "Ready",
                base.replace("status: \"True\"", "status: \"False\""),
            ),
            ("allocatable GPUs", base.replace("gpu: \"1\"", "gpu: \"0\"")),
            (
                "a taint",
                base.replace("effect: NoSchedule", "effect: NoExecute"),
            ),
            (
                "cordon",
                base.replace("spec: {", "spec: {unschedulable: true, "),
            ),
            (
                "deletion",
                base.replace(
                    "name: a,",
                    "name: a, deletionTimestamp: \"2026-11-23T10:01:00Z\",",
                ),
            ),
        ] {
            assert_ne!(fp(&changed), before, "{what} must change the fingerprint");
        }
    }

    fn node(yaml: &str) -> Node {
        obj(yaml)
    }

    #[test]
    fn the_node_store_keeps_only_what_the_controller_reads() {
        let images: String = (0..200)
            .map(|i| {
                format!("{{names: [\"registry.example/big/image-{i}:v1\"], sizeBytes: 1000000}}, ")
            })
            .collect();
        let full = node(&format!(
            "metadata:\n  name: n1\n  labels: {{apps: phi-3, kaito.sh/workspace: workspace-phi-3-mini, kaito.sh/workspacenamespace: default}}\n  \
             annotations: {{node.alpha.kubernetes.io/ttl: \"0\", big: \"{}\"}}\n  \
             managedFields: [{{manager: kubelet, operation: Update}}]\n\
             spec: {{providerID: \"azure:///x\", podCIDR: 10.0.0.0/24, taints: [{{key: sku, value: gpu, effect: NoSchedule}}]}}\n\
             status:\n  allocatable: {{nvidia.com/gpu: \"1\", cpu: \"4\"}}\n  capacity: {{nvidia.com/gpu: \"1\"}}\n  \
             conditions: [{{type: MemoryPressure, status: \"False\"}}, {{type: Ready, status: \"True\"}}]\n  \
             images: [{images}]\n  \
             nodeInfo: {{machineID: m, systemUUID: s, bootID: b, kernelVersion: k, osImage: o, containerRuntimeVersion: c, kubeletVersion: v, kubeProxyVersion: v, operatingSystem: linux, architecture: amd64}}\n  \
             addresses: [{{type: InternalIP, address: 10.0.0.4}}]",
            "x".repeat(4096)
        ));
        let mut slim = full.clone();
        project_node(&mut slim);
        let size = |n: &Node| serde_json::to_vec(n).map(|v| v.len()).unwrap_or(0);
        assert!(
            size(&slim) * 20 < size(&full),
            "{} bytes of {}",
            size(&slim),
            size(&full)
        );
        assert_eq!(node_fingerprint(&slim), node_fingerprint(&full));
        let w = ws(include_str!(
            "../../examples/inference/kaito_workspace_phi_3.yaml"
        ));
        for byo in [true, false] {
            assert_eq!(
                census(&w, [&slim], byo, false),
                census(&w, [&full], byo, false),
                "byo={byo}"
            );
        }
        assert_eq!(census(&w, [&slim], false, false).ready, ["n1"]);
        assert_eq!(slim.metadata.labels, full.metadata.labels);
        assert!(slim.status.as_ref().is_some_and(|s| s.images.is_none()));
    }

    const READY: &str = "status:\n  conditions: [{type: Ready, status: \"True\"}]\n  allocatable: {nvidia.com/gpu: \"1\"}";

    #[test]
    fn readiness_needs_ready_and_gpus() {
        let table = [
            (format!("metadata: {{name: a}}\n{READY}"), true),
            ("metadata: {name: a}\nstatus:\n  conditions: [{type: Ready, status: \"False\"}]\n  allocatable: {nvidia.com/gpu: \"1\"}".to_string(), false),
            ("metadata: {name: a}\nstatus:\n  conditions: [{type: Ready, status: \"True\"}]\n  allocatable: {cpu: \"4\"}".to_string(), false),
            (format!("metadata: {{name: a}}\nspec: {{unschedulable: true}}\n{READY}"), false),
        ];
        for (y, want) in table {
            assert_eq!(node_ready(&node(&y), true), want, "{y}");
        }
    }

    #[test]
    fn byo_census_needs_selector_and_gfd_labels() {
        let w = ws(include_str!(
            "../../examples/inference/kaito_workspace_phi_3.yaml"
        ));
        let gfd = "nvidia.com/gpu.product: V100, nvidia.com/gpu.count: \"1\"";
        let nodes = [
            node(&format!(
                "metadata: {{name: n2, labels: {{apps: phi-3, {gfd}}}}}\n{READY}"
            )),
            node(&format!(
                "metadata: {{name: n1, labels: {{apps: phi-3, {gfd}}}}}\n{READY}"
            )),
            node(&format!(
                "metadata: {{name: other, labels: {{apps: x, {gfd}}}}}\n{READY}"
            )),
            node(&format!(
                "metadata: {{name: plain, labels: {{apps: phi-3}}}}\n{READY}"
            )),
            node(&format!(
                "metadata: {{name: cold, labels: {{apps: phi-3, {gfd}}}}}\nstatus: {{allocatable: {{nvidia.com/gpu: \"1\"}}}}"
            )),
        ];
        let c = census(&w, &nodes, true, false);
        assert_eq!(c.ready, ["n1", "n2"]);
        assert_eq!(c.unlabelled, ["plain"]);
        assert_eq!(c.not_ready, [("cold".to_string(), "not Ready".to_string())]);
        let c = census(&w, &nodes, false, false);
        assert_eq!(
            c,
            NodeCensus::default(),
            "byo nodes are not provisioned nodes"
        );
    }

    #[test]
    fn cpu_only_nodes_are_ready_without_gpus_or_gfd_labels() {
        let cpu_ready = "status:\n  conditions: [{type: Ready, status: \"True\"}]\n  allocatable: {cpu: \"4\", memory: 16Gi}";
        let plain = node(&format!(
            "metadata: {{name: plain, labels: {{apps: phi-3}}}}\n{cpu_ready}"
        ));
        assert!(!node_ready(&plain, true), "a GPU workspace needs GPUs");
        assert!(node_ready(&plain, false));
        let cordoned = node(&format!(
            "metadata: {{name: c, labels: {{apps: phi-3}}}}\nspec: {{unschedulable: true}}\n{cpu_ready}"
        ));
        assert!(!node_ready(&cordoned, false));
        let w = ws(include_str!(
            "../../examples/inference/kaito_workspace_phi_3.yaml"
        ));
        let c = census(&w, [&plain, &cordoned], true, true);
        assert_eq!(c.ready, ["plain"]);
        assert!(c.unlabelled.is_empty());
        assert_eq!(c.not_ready, [("c".to_string(), "not Ready".to_string())]);
        assert_eq!(c.node_kind(), "CPU-only");
        let gpu = census(&w, [&plain], true, false);
        assert_eq!(gpu.unlabelled, ["plain"]);
        assert_eq!(gpu.node_kind(), "GPU");
    }

    #[test]
    fn a_cpu_only_nodeclaim_has_no_gpu_taint() {
        let w = ws(
            "metadata: {name: w, namespace: n}\nresource: {instanceType: m5.xlarge, labelSelector: {matchLabels: {apps: x}}}\ninference: {preset: {name: smollm2-135m-instruct}}",
        );
        let p = plan(&w, Cloud::Aws, None).expect("plan");
        let c = nodeclaim(
            &w,
            &p,
            &Config::new(Cloud::Aws, Provisioner::Karpenter).karpenter,
            0,
        );
        assert!(c["spec"].get("taints").is_none(), "{c}");
        assert_eq!(c["spec"]["requirements"][0]["values"], json!(["m5.xlarge"]));
    }

    #[test]
    fn selector_expressions_are_honoured() {
        let w = ws(
            "metadata: {name: w}\nresource:\n  labelSelector:\n    matchExpressions: [{key: tier, operator: In, values: [gpu]}, {key: bad, operator: DoesNotExist}]",
        );
        let l = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(selector_matches(&w, &l(&[("tier", "gpu")])));
        assert!(!selector_matches(&w, &l(&[("tier", "gpu"), ("bad", "1")])));
        assert!(!selector_matches(&w, &l(&[("tier", "cpu")])));
        let empty = ws("metadata: {name: w}");
        assert!(
            !selector_matches(&empty, &l(&[("tier", "gpu")])),
            "no selector matches nothing"
        );
    }

    #[test]
    fn nodeclaim_follows_the_contract() {
        let w = ws(include_str!(
            "../../examples/inference/kaito_workspace_phi_3.yaml"
        ));
        let p = plan(&w, Cloud::Azure, None).expect("plan");
        let c = nodeclaim(
            &w,
            &p,
            &Config::new(Cloud::Azure, Provisioner::Karpenter).karpenter,
            0,
        );
        assert_eq!(c["apiVersion"], "karpenter.sh/v1");
        assert_eq!(
            c["spec"]["nodeClassRef"],
            json!({"group": "karpenter.azure.com", "kind": "AKSNodeClass", "name": "default"})
        );
        assert_eq!(
            c["spec"]["requirements"][1],
            json!({"key": "karpenter.sh/nodepool", "operator": "In", "values": ["kaito"]})
        );
        assert_eq!(
            c["metadata"]["name"],
            naming::nodeclaim_name("default", "workspace-phi-3-mini", 0)
        );
        assert_eq!(c["metadata"]["labels"]["karpenter.sh/nodepool"], "kaito");
        assert_eq!(
            c["metadata"]["labels"]["kaito.sh/workspace"],
            "workspace-phi-3-mini"
        );
        assert_eq!(
            c["metadata"]["labels"]["kaito.sh/workspacenamespace"],
            "default"
        );
        assert_eq!(c["metadata"]["labels"]["apps"], "phi-3");
        assert_eq!(c["metadata"]["labels"]["kaito.sh/workspaceuid"], "uid-1");
        assert_eq!(
            c["spec"]["requirements"][0],
            json!({"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["Standard_NC6s_v3"]})
        );
        assert_eq!(
            c["spec"]["taints"][0],
            json!({"key": "sku", "value": "gpu", "effect": "NoSchedule"})
        );
        assert!(
            c["spec"]["resources"]["requests"]["storage"]
                .as_str()
                .is_some_and(|s| s.ends_with("Gi"))
        );
        assert!(c["metadata"].get("ownerReferences").is_none());
    }

    #[test]
    fn nodeclaim_references_the_clouds_node_class_and_the_configured_pool() {
        let w = ws(
            "metadata: {name: w, namespace: n}\nresource: {instanceType: g5.xlarge, labelSelector: {matchLabels: {apps: x}}}\ninference: {preset: {name: phi-3-mini-4k-instruct}}",
        );
        let p = plan(&w, Cloud::Aws, None).expect("plan");
        let cfg = KarpenterConfig::new(Cloud::Aws, "gpu-nodes", "gpu-pool");
        let c = nodeclaim(&w, &p, &cfg, 0);
        assert_eq!(
            c["spec"]["nodeClassRef"],
            json!({"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu-nodes"})
        );
        assert_eq!(c["metadata"]["labels"]["karpenter.sh/nodepool"], "gpu-pool");
        assert_eq!(
            c["spec"]["requirements"],
            json!([
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["g5.xlarge"]},
                {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["gpu-pool"]},
            ])
        );
    }
}
