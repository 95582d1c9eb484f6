//! The installation's policy for what a Workspace may make the controller create on a tenant's
//! behalf: how many nodes, and whether its pods may reach into the node (hostPath volumes,
//! privileged containers, host namespaces, extra capabilities).
//!
//! Anyone allowed to write a Workspace makes the controller (which holds cluster-wide rights)
//! create nodes and pods for them, so the limits a cluster admin puts on pods (Pod Security
//! Admission) must also hold here: the chart's `policy` values set them, the webhook enforces
//! them on every write.

use k8s_openapi::api::core::v1::{Container, PodSpec, SecurityContext};

use super::{AdmissionConfig, Verdict};
use crate::types::Workspace;

/// Default most nodes one Workspace may ask for (`resource.count`); chart value
/// `policy.maxNodesPerWorkspace`.
pub const DEFAULT_MAX_NODES_PER_WORKSPACE: u32 = 10;

/// Capabilities a container may add under the Pod Security Standards' *baseline* profile; any
/// other needs `policy.allowPrivileged`.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// What the installation allows a Workspace's pods to do on their node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodPolicy {
    /// Most nodes (`resource.count`) one Workspace may ask for.
    pub max_nodes_per_workspace: u32,
    /// `hostPath` volumes in `inference.template` and in `volumeSource` fields.
    pub allow_host_path: bool,
    /// Privileged containers, host namespaces and capabilities beyond the baseline profile in
    /// `inference.template`.
    pub allow_privileged: bool,
}

impl Default for PodPolicy {
    /// Secure by default: a few nodes, nothing that reaches into the node.
    fn default() -> Self {
        Self {
            max_nodes_per_workspace: DEFAULT_MAX_NODES_PER_WORKSPACE,
            allow_host_path: false,
            allow_privileged: false,
        }
    }
}

/// Checks `ws` against the installation's policy.
pub(super) fn check_policy(ws: &Workspace, cfg: &AdmissionConfig, v: &mut Verdict) {
    let policy = &cfg.pod_policy;
    if let Some(count) = ws.resource.count
        && i64::from(count) > i64::from(policy.max_nodes_per_workspace)
    {
        v.error(
            "resource.count",
            format!(
                "{count} nodes is more than this installation allows for one workspace ({max}); \
                 use at most {max}, or ask the cluster admin to raise the chart value \
                 policy.maxNodesPerWorkspace",
                max = policy.max_nodes_per_workspace
            ),
        );
    }
    if !policy.allow_host_path {
        let volumes = ws
            .inference
            .iter()
            .flat_map(|i| i.adapters.iter().flatten().enumerate())
            .filter_map(|(i, a)| {
                let field = format!("inference.adapters[{i}].source.volumeSource");
                Some((field, a.source.as_ref()?.volume_source.as_ref()?))
            })
            .chain(ws.tuning.iter().flat_map(|t| {
                let input = t.input.as_ref().and_then(|d| d.volume_source.as_ref());
                let output = t.output.as_ref().and_then(|d| d.volume_source.as_ref());
                [
                    input.map(|s| ("tuning.input.volumeSource".to_string(), s)),
                    output.map(|s| ("tuning.output.volumeSource".to_string(), s)),
                ]
                .into_iter()
                .flatten()
            }));
        for (field, source) in volumes {
            if source.get("hostPath").is_some() {
                v.error(format!("{field}.hostPath"), host_path_message());
            }
        }
    }
    if let Some(spec) = ws
        .inference
        .as_ref()
        .and_then(|i| i.template.as_ref())
        .and_then(|t| t.spec.as_ref())
    {
        check_pod_spec("inference.template.spec", spec, policy, v);
    }
}

fn host_path_message() -> String {
    "hostPath volumes are not allowed here: they expose the node's files to the workspace's \
     pods; use a persistentVolumeClaim, or ask the cluster admin to set the chart value \
     policy.allowHostPath"
        .to_string()
}

fn privileged_message(what: &str) -> String {
    format!(
        "{what} is not allowed: it gives the pod control of its node; remove it, or ask the \
         cluster admin to set the chart value policy.allowPrivileged"
    )
}

/// Checks a user's pod template: volumes, host namespaces, and every container.
fn check_pod_spec(field: &str, spec: &PodSpec, policy: &PodPolicy, v: &mut Verdict) {
    if !policy.allow_host_path {
        for (i, volume) in spec.volumes.iter().flatten().enumerate() {
            if volume.host_path.is_some() {
                v.error(
                    format!("{field}.volumes[{i}].hostPath"),
                    host_path_message(),
                );
            }
        }
    }
    if policy.allow_privileged {
        return;
    }
    for (name, set) in [
        ("hostNetwork", spec.host_network),
        ("hostPID", spec.host_pid),
        ("hostIPC", spec.host_ipc),
    ] {
        if set == Some(true) {
            v.error(
                format!("{field}.{name}"),
                privileged_message(&format!("{name}: true")),
            );
        }
    }
    let groups: [(&str, Vec<&Container>); 2] = [
        ("containers", spec.containers.iter().collect()),
        (
            "initContainers",
            spec.init_containers.iter().flatten().collect(),
        ),
    ];
    for (group, containers) in groups {
        for (i, c) in containers.into_iter().enumerate() {
            if let Some(sc) = &c.security_context {
                check_security_context(&format!("{field}.{group}[{i}].securityContext"), sc, v);
            }
        }
    }
    for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        if let Some(sc) = &c.security_context {
            check_security_context(
                &format!("{field}.ephemeralContainers[{i}].securityContext"),
                sc,
                v,
            );
        }
    }
}

fn check_security_context(field: &str, sc: &SecurityContext, v: &mut Verdict) {
    if sc.privileged == Some(true) {
        v.error(
            format!("{field}.privileged"),
            privileged_message("privileged: true"),
        );
    }
    let added = sc.capabilities.iter().flat_map(|c| c.add.iter().flatten());
    for (i, cap) in added.enumerate() {
        let name = cap.trim_start_matches("CAP_");
        if !BASELINE_CAPABILITIES.contains(&name) {
            v.error(
                format!("{field}.capabilities.add[{i}]"),
                privileged_message(&format!(
                    "adding {cap} (beyond the Pod Security Standards' baseline)"
                )),
            );
        }
    }
}
