//! Status: conditions, state and node lists recomputed from observed objects on every
//! reconcile (pure), pod-failure classification, and condition merging that keeps
//! `lastTransitionTime` unless the status flips.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kaito_api::{
    CONDITION_INFERENCE_READY, CONDITION_JOB_STARTED, CONDITION_RESOURCE_READY,
    CONDITION_WORKSPACE_SUCCEEDED, Reason, Workspace, WorkspaceStatus, state,
};

use crate::config::Provisioner;
use crate::naming;
use crate::nodes::NodeCensus;
use crate::ownership::CONDITION_DELETION_BLOCKED;
use crate::plan::WorkloadKind;
use crate::provision::ProvisionReport;

/// A desired condition before merging with the stored one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    /// Condition type.
    pub type_: &'static str,
    /// True or False.
    pub ok: bool,
    /// Machine-readable reason.
    pub reason: Reason,
    /// What is true, or what is wrong and what to do.
    pub message: String,
}

impl Cond {
    fn yes(type_: &'static str, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            type_,
            ok: true,
            reason,
            message: message.into(),
        }
    }
    fn no(type_: &'static str, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            type_,
            ok: false,
            reason,
            message: message.into(),
        }
    }
}

/// Why a pod does not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFailure {
    /// Why.
    pub reason: Reason,
    /// Names the pod and container, says what happened and what to do.
    pub message: String,
}

/// Classifies one pod: image pull errors, crash loops, OOM kills, config errors,
/// unschedulable. None when nothing is known to be wrong.
pub fn classify_pod(pod: &Pod) -> Option<PodFailure> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("?");
    let status = pod.status.as_ref()?;
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for c in containers {
        if let Some(f) = runtime_failure(pod, pod_name, c) {
            return Some(f);
        }
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
        let terminated = c.state.as_ref().and_then(|s| s.terminated.as_ref());
        let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        let w_reason = waiting.and_then(|w| w.reason.as_deref()).unwrap_or("");
        let w_msg = waiting.and_then(|w| w.message.as_deref()).unwrap_or("");
        match w_reason {
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
                return Some(PodFailure {
                    reason: Reason::ImagePullError,
                    message: format!(
                        "pod {pod_name}: container {} cannot pull image {} ({w_reason}{}); check the image name, that it exists, and the image pull secrets",
                        c.name,
                        c.image,
                        if w_msg.is_empty() {
                            String::new()
                        } else {
                            format!(": {w_msg}")
                        }
                    ),
                });
            }
            "CreateContainerConfigError" | "CreateContainerError" => {
                return Some(PodFailure {
                    reason: Reason::ContainerConfigError,
                    message: format!(
                        "pod {pod_name}: container {} cannot be created: {w_msg}; create the Secret or ConfigMap it refers to",
                        c.name
                    ),
                });
            }
            "CrashLoopBackOff" => {
                let oom = last.and_then(|t| t.reason.as_deref()) == Some("OOMKilled");
                if oom {
                    return Some(oom_failure(pod_name, &c.name, c.restart_count));
                }
                let code = last.map(|t| t.exit_code).unwrap_or_default();
                let why = last
                    .and_then(|t| t.reason.clone())
                    .unwrap_or_else(|| "Error".into());
                return Some(PodFailure {
                    reason: Reason::CrashLoopBackOff,
                    message: format!(
                        "pod {pod_name}: container {} keeps crashing ({} restarts, last exit code {code}: {why}); see `kubectl logs {pod_name} -c {} --previous`",
                        c.name, c.restart_count, c.name
                    ),
                });
            }
            _ => {}
        }
        if terminated.and_then(|t| t.reason.as_deref()) == Some("OOMKilled") {
            return Some(oom_failure(pod_name, &c.name, c.restart_count));
        }
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    unschedulable.map(|c| PodFailure {
        reason: Reason::Unschedulable,
        message: format!(
            "pod {pod_name} cannot be scheduled: {}",
            c.message
                .as_deref()
                .unwrap_or("the scheduler found no fitting node")
        ),
    })
}

/// A failure the runtime reported in its termination message (`Reason: message`, one of
/// [`Reason::RUNTIME`]), from the container's current or last termination. For a
/// refused download, the fix names the Secret the pod takes `HF_TOKEN` from.
fn runtime_failure(
    pod: &Pod,
    pod_name: &str,
    c: &k8s_openapi::api::core::v1::ContainerStatus,
) -> Option<PodFailure> {
    let terminated = [c.state.as_ref(), c.last_state.as_ref()]
        .into_iter()
        .flatten()
        .find_map(|s| s.terminated.as_ref())?;
    let text = terminated.message.as_deref()?.trim();
    let (found, message) = text.split_once(": ")?;
    let reason_name = Reason::RUNTIME.into_iter().find(|r| r.as_str() == found)?;
    let fix = if reason_name == Reason::ModelDownloadUnauthorized {
        let secret = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|k| k.name == c.name))
            .and_then(|k| k.env.as_ref())
            .and_then(|env| env.iter().find(|e| e.name == "HF_TOKEN"))
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.secret_key_ref.as_ref())
            .map(|r| (r.name.clone(), r.key.clone()));
        match secret {
            Some((name, key)) => format!(
                "; the token comes from Secret {name} (key {key}): put a Hugging Face token there that has access to the repository (accept the model's license with that account)"
            ),
            None => "; set inference.preset.presetOptions.modelAccessSecret to a Secret with key HF_TOKEN holding a Hugging Face token that has access to the repository".to_string(),
        }
    } else {
        format!("; see `kubectl logs {pod_name} -c {} --previous`", c.name)
    };
    Some(PodFailure {
        reason: reason_name,
        message: format!("pod {pod_name}: container {}: {message}{fix}", c.name),
    })
}

fn oom_failure(pod: &str, container: &str, restarts: i32) -> PodFailure {
    PodFailure {
        reason: Reason::OomKilled,
        message: format!(
            "pod {pod}: container {container} was killed for running out of memory ({restarts} restarts); choose an instance type with more memory or a shorter max model length"
        ),
    }
}

/// The first failure among `pods`, by pod name.
pub fn first_failure(pods: &[Pod]) -> Option<PodFailure> {
    let mut sorted: Vec<&Pod> = pods.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    sorted.into_iter().find_map(classify_pod)
}

/// The first container (init containers first, in pod-name order) that exited non-zero:
/// which step of the tuning Job (data-downloader, trainer, publisher) to read the logs of.
pub fn failed_container(pods: &[Pod]) -> Option<String> {
    let mut sorted: Vec<&Pod> = pods.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    sorted.into_iter().find_map(|p| {
        let status = p.status.as_ref()?;
        status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten())
            .find(|c| {
                [c.state.as_ref(), c.last_state.as_ref()]
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.terminated.as_ref())
                    .any(|t| t.exit_code != 0)
            })
            .map(|c| c.name.clone())
    })
}

/// Everything status is computed from.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// The provisioner in use.
    pub provisioner: Provisioner,
    /// Inference or tuning (None when the spec names neither).
    pub kind: Option<WorkloadKind>,
    /// The plan error, when the spec cannot be planned.
    pub invalid: Option<String>,
    /// Nodes the workspace needs.
    pub target: i32,
    /// Nodes observed.
    pub census: &'a NodeCensus,
    /// Provisioner report.
    pub provision: &'a ProvisionReport,
    /// The serving StatefulSet.
    pub statefulset: Option<&'a StatefulSet>,
    /// The tuning Job.
    pub job: Option<&'a Job>,
    /// Pods of the workload.
    pub pods: &'a [Pod],
    /// A child the workload needs whose name is held by an object that is not the
    /// workspace's: what and how to clear it ([`crate::ownership::child_name_taken`]).
    pub name_taken: Option<String>,
}

/// The desired conditions (in display order) and state.
pub fn desired(ws: &Workspace, o: &Observed<'_>) -> (Vec<Cond>, &'static str) {
    let kind = o.kind.unwrap_or(if ws.tuning.is_some() {
        WorkloadKind::Tuning
    } else {
        WorkloadKind::Inference
    });
    let work_type = if kind == WorkloadKind::Tuning {
        CONDITION_JOB_STARTED
    } else {
        CONDITION_INFERENCE_READY
    };
    if let Some(err) = &o.invalid {
        let msg = format!("the spec cannot be satisfied: {err}; edit the workspace");
        return (
            vec![
                Cond::no(CONDITION_RESOURCE_READY, Reason::InvalidSpec, msg.clone()),
                Cond::no(work_type, Reason::InvalidSpec, msg.clone()),
                Cond::no(CONDITION_WORKSPACE_SUCCEEDED, Reason::InvalidSpec, msg),
            ],
            state::FAILED,
        );
    }
    let resource = resource_condition(ws, o);
    let work = match (&o.name_taken, kind) {
        (Some(why), _) => Cond::no(work_type, Reason::ChildNameTaken, why.clone()),
        (None, WorkloadKind::Inference) => inference_condition(ws, o, &resource),
        (None, WorkloadKind::Tuning) => job_started_condition(o, &resource),
    };
    let (summary, st) = match kind {
        WorkloadKind::Inference => {
            if resource.ok && work.ok {
                (
                    Cond::yes(
                        CONDITION_WORKSPACE_SUCCEEDED,
                        Reason::Ready,
                        format!(
                            "serving {} at http://{}.{}.svc (port 80)",
                            ws.preset().map(|p| p.name.as_str()).unwrap_or("the model"),
                            naming::name(ws),
                            naming::namespace(ws)
                        ),
                    ),
                    state::READY,
                )
            } else {
                let blocking = if resource.ok { &work } else { &resource };
                let was_ready = ws
                    .status
                    .as_ref()
                    .and_then(|s| s.state.as_deref())
                    .is_some_and(|s| s == state::READY || s == state::NOT_READY);
                (
                    Cond::no(
                        CONDITION_WORKSPACE_SUCCEEDED,
                        blocking.reason,
                        format!("{}: {}", blocking.type_, blocking.message),
                    ),
                    if was_ready {
                        state::NOT_READY
                    } else {
                        state::PENDING
                    },
                )
            }
        }
        WorkloadKind::Tuning => job_summary(o, &resource, &work),
    };
    (vec![resource, work, summary], st)
}

/// Whether enough of the workspace's nodes are ready for its workload (`target`: its
/// `resource.count`, at least 1). The one readiness rule: the reconciler creates the workload
/// when it holds, and `ResourceReady` is True when it holds.
pub fn nodes_ready(census: &NodeCensus, target: i32) -> bool {
    census.ready.len() >= usize::try_from(target.max(1)).unwrap_or(1)
}

/// Whether the workspace is settled: served (`Ready`) or tuned (`Succeeded`).
pub fn settled(status: &WorkspaceStatus) -> bool {
    matches!(
        status.state.as_deref(),
        Some(state::READY) | Some(state::SUCCEEDED)
    )
}

fn resource_condition(ws: &Workspace, o: &Observed<'_>) -> Cond {
    let target = usize::try_from(o.target.max(1)).unwrap_or(1);
    let ready = o.census.ready.len();
    // GPU, or CPU-only for a workspace served on the CPU.
    let kind = o.census.node_kind();
    if nodes_ready(o.census, o.target) {
        return Cond::yes(
            CONDITION_RESOURCE_READY,
            Reason::Ready,
            format!(
                "{ready} of {target} {kind} node(s) ready: {}",
                o.census.ready.join(", ")
            ),
        );
    }
    if let Some((reason, m)) = &o.provision.failure {
        return Cond::no(CONDITION_RESOURCE_READY, *reason, m.clone());
    }
    let not_ready = if o.census.not_ready.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = o
            .census
            .not_ready
            .iter()
            .map(|(n, why)| format!("{n}: {why}"))
            .collect();
        format!("; not ready: {}", list.join(", "))
    };
    match o.provisioner {
        Provisioner::Byo => {
            let selector = selector_text(ws);
            let mut msg = if ready == 0 && o.census.not_ready.is_empty() {
                format!(
                    "no {kind} nodes match the label selector {selector}; label {target} {kind} node(s) with it, or change resource.labelSelector"
                )
            } else {
                format!(
                    "{ready} of {target} matching {kind} node(s) ready{not_ready}; add {} {kind} node(s) matching {selector} or lower resource.count",
                    target - ready
                )
            };
            if !o.census.unlabelled.is_empty() {
                msg.push_str(&format!(
                    "; node(s) {} match but have no GPU feature discovery labels (nvidia.com/gpu.product, nvidia.com/gpu.count): install NVIDIA GPU feature discovery",
                    o.census.unlabelled.join(", ")
                ));
            }
            Cond::no(CONDITION_RESOURCE_READY, Reason::NodesNotReady, msg)
        }
        p => Cond::no(
            CONDITION_RESOURCE_READY,
            Reason::Provisioning,
            format!(
                "{ready} of {target} {kind} node(s) ready{not_ready}; {}",
                o.provision
                    .progress
                    .clone()
                    .unwrap_or_else(|| format!("waiting for the {p} provisioner to create them"))
            ),
        ),
    }
}

fn selector_text(ws: &Workspace) -> String {
    let labels: Vec<String> = ws
        .match_labels()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if labels.is_empty() {
        "(resource.labelSelector)".into()
    } else {
        labels.join(",")
    }
}

fn waiting_for_nodes(type_: &'static str) -> Cond {
    Cond::no(
        type_,
        Reason::NodesNotReady,
        "waiting for ResourceReady: the workload is created once the nodes are ready",
    )
}

fn inference_condition(ws: &Workspace, o: &Observed<'_>, resource: &Cond) -> Cond {
    let Some(sts) = o.statefulset else {
        return waiting_for_nodes(CONDITION_INFERENCE_READY);
    };
    let want = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = sts.status.clone().unwrap_or_default();
    let ready = st.ready_replicas.unwrap_or(0);
    let current = st.observed_generation == sts.metadata.generation
        && st.updated_replicas.unwrap_or(0) >= want;
    // An update in progress: the StatefulSet controller has seen an older spec, or has seen
    // this one and still runs pods of the previous revision. A StatefulSet it has not seen
    // yet (just created) or one whose first pods are starting is no rollout: the message stays
    // the same from creation until ready, so the status is not rewritten in between.
    let rolling = st
        .observed_generation
        .is_some_and(|g| Some(g) != sts.metadata.generation)
        || matches!((&st.current_revision, &st.update_revision), (Some(c), Some(u)) if c != u);
    if ready >= want && current && o.pods.iter().all(|p| classify_pod(p).is_none()) {
        return Cond::yes(
            CONDITION_INFERENCE_READY,
            Reason::Ready,
            format!("{ready} of {want} replica(s) pass the runtime health check"),
        );
    }
    if let Some(f) = first_failure(o.pods) {
        return Cond::no(CONDITION_INFERENCE_READY, f.reason, f.message);
    }
    let _ = (ws, resource);
    Cond::no(
        CONDITION_INFERENCE_READY,
        Reason::Loading,
        format!(
            "{ready} of {want} replica(s) ready{}; the model is loading (the startup probe allows for the model's size)",
            if rolling {
                ", rolling out a new revision"
            } else {
                ""
            }
        ),
    )
}

fn job_condition(job: &Job, type_: &str) -> Option<(bool, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| (true, c.message.clone().unwrap_or_default()))
}

fn job_started_condition(o: &Observed<'_>, _resource: &Cond) -> Cond {
    let Some(job) = o.job else {
        return waiting_for_nodes(CONDITION_JOB_STARTED);
    };
    let st = job.status.clone().unwrap_or_default();
    let finished =
        job_condition(job, "Complete").is_some() || job_condition(job, "Failed").is_some();
    if !finished && let Some(f) = first_failure(o.pods) {
        return Cond::no(CONDITION_JOB_STARTED, f.reason, f.message);
    }
    let running_pod = o.pods.iter().any(|p| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|ph| ph != "Pending")
    });
    if st.start_time.is_some() && (running_pod || finished || st.active.unwrap_or(0) > 0) {
        Cond::yes(
            CONDITION_JOB_STARTED,
            Reason::Ready,
            format!("Job {} started", job.metadata.name.as_deref().unwrap_or("")),
        )
    } else {
        Cond::no(
            CONDITION_JOB_STARTED,
            Reason::Provisioning,
            "the tuning pod is being scheduled and its input downloaded",
        )
    }
}

fn job_summary(o: &Observed<'_>, resource: &Cond, started: &Cond) -> (Cond, &'static str) {
    if let Some(job) = o.job {
        if let Some((_, _)) = job_condition(job, "Complete") {
            return (
                Cond::yes(
                    CONDITION_WORKSPACE_SUCCEEDED,
                    Reason::JobSucceeded,
                    "the tuning Job completed and the adapter was published",
                ),
                state::SUCCEEDED,
            );
        }
        if let Some((_, msg)) = job_condition(job, "Failed") {
            let name = job.metadata.name.as_deref().unwrap_or("");
            let detail = first_failure(o.pods)
                .map(|f| format!(" ({})", f.message))
                .unwrap_or_default();
            let container = failed_container(o.pods).unwrap_or_else(|| "trainer".into());
            return (
                Cond::no(
                    CONDITION_WORKSPACE_SUCCEEDED,
                    Reason::JobFailed,
                    format!(
                        "the tuning Job failed: {msg}{detail}; see `kubectl logs job/{name} -c {container}`, fix the input or config, and recreate the workspace"
                    ),
                ),
                state::FAILED,
            );
        }
    }
    let blocking = if !resource.ok { resource } else { started };
    if blocking.ok {
        (
            Cond::no(
                CONDITION_WORKSPACE_SUCCEEDED,
                Reason::JobRunning,
                "the tuning Job is running",
            ),
            state::RUNNING,
        )
    } else {
        (
            Cond::no(
                CONDITION_WORKSPACE_SUCCEEDED,
                blocking.reason,
                format!("{}: {}", blocking.type_, blocking.message),
            ),
            state::PENDING,
        )
    }
}

/// Merges desired conditions into stored ones: `lastTransitionTime` moves only when the
/// status flips; conditions not desired (e.g. from another workload kind) are dropped.
pub fn merge(
    old: &[Condition],
    desired: &[Cond],
    now: &Time,
    generation: Option<i64>,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = if d.ok { "True" } else { "False" };
            let prev = old.iter().find(|c| c.type_ == d.type_);
            Condition {
                type_: d.type_.into(),
                status: status.into(),
                reason: d.reason.as_str().into(),
                message: d.message.chars().take(32_000).collect(),
                observed_generation: generation,
                last_transition_time: match prev {
                    Some(p) if p.status == status => p.last_transition_time.clone(),
                    _ => now.clone(),
                },
            }
        })
        .collect()
}

/// The new status of `ws`.
pub fn compute(ws: &Workspace, o: &Observed<'_>, now: &Time) -> WorkspaceStatus {
    let (conds, st) = desired(ws, o);
    let old = ws
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    WorkspaceStatus {
        worker_nodes: Some(o.census.ready.clone()),
        conditions: Some(merge(&old, &conds, now, ws.metadata.generation)),
        state: Some(st.into()),
        target_node_count: Some(o.target),
    }
}

/// The conditions of a workspace whose deletion is blocked: `old` with a True
/// `DeletionBlocked` condition carrying `message` (replacing an earlier one; its
/// `lastTransitionTime` kept when it was already True).
pub fn with_deletion_blocked(
    old: &[Condition],
    message: &str,
    now: &Time,
    generation: Option<i64>,
) -> Vec<Condition> {
    let prev = old.iter().find(|c| c.type_ == CONDITION_DELETION_BLOCKED);
    let mut out: Vec<Condition> = old
        .iter()
        .filter(|c| c.type_ != CONDITION_DELETION_BLOCKED)
        .cloned()
        .collect();
    out.push(Condition {
        type_: CONDITION_DELETION_BLOCKED.into(),
        status: "True".into(),
        reason: Reason::DeletionBlocked.as_str().into(),
        message: message.chars().take(32_000).collect(),
        observed_generation: generation,
        last_transition_time: match prev {
            Some(p) if p.status == "True" => p.last_transition_time.clone(),
            _ => now.clone(),
        },
    });
    out
}

/// Condition changes worth an Event: (type, reason, message, is_warning) for each condition
/// whose status or reason changed, except to a progress reason (nodes provisioning, a model
/// loading, a Job running: the status shows it; an Event says what happened: a condition
/// turned true, or a failure).
pub fn transitions(old: &[Condition], new: &[Condition]) -> Vec<(String, String, String, bool)> {
    new.iter()
        .filter(|n| {
            old.iter()
                .find(|o| o.type_ == n.type_)
                .is_none_or(|o| o.status != n.status || o.reason != n.reason)
        })
        .filter(|n| {
            n.status == "True" || !n.reason.parse::<Reason>().is_ok_and(Reason::is_progress)
        })
        .map(|n| {
            (
                n.type_.clone(),
                n.reason.clone(),
                n.message.clone(),
                n.status != "True",
            )
        })
        .collect()
}

/// An Event to publish for a status change.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub reason: String,
    pub note: String,
    pub warning: bool,
}

/// The Events one status change is worth: a Warning per condition that turned to a failure,
/// and one Normal Event when the workspace as a whole turns true (WorkspaceSucceeded), naming
/// every condition that turned true with it, with its reason. A condition turning true on the
/// way (ResourceReady while the model loads, JobStarted) is in the status only: the
/// `WorkloadCreated`/`JobCreated` Event already marks that moment.
pub fn notices(old: &[Condition], new: &[Condition]) -> Vec<Notice> {
    let (failures, turned_true): (Vec<_>, Vec<_>) = transitions(old, new)
        .into_iter()
        .partition(|(_, _, _, warning)| *warning);
    let mut out: Vec<Notice> = failures
        .into_iter()
        .map(|(type_, reason, message, _)| Notice {
            reason,
            note: format!("{type_}: {message}"),
            warning: true,
        })
        .collect();
    if let Some((_, reason, _, _)) = turned_true
        .iter()
        .find(|(type_, ..)| type_ == CONDITION_WORKSPACE_SUCCEEDED)
    {
        out.push(Notice {
            reason: reason.clone(),
            note: turned_true
                .iter()
                .map(|(type_, _, message, _)| format!("{type_}: {message}"))
                .collect::<Vec<_>>()
                .join("; "),
            warning: false,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{obj, ws};

    fn time(s: &str) -> Time {
        Time(s.parse().expect("timestamp"))
    }

    #[test]
    fn pod_failures_are_classified() {
        let table: [(&str, Option<&str>, &str); 7] = [
            (
                "status: {containerStatuses: [{name: model, image: bad:1, imageID: '', ready: false, restartCount: 0, state: {waiting: {reason: ImagePullBackOff, message: 'not found'}}}]}",
                Some("ImagePullError"),
                "cannot pull image bad:1",
            ),
            (
                "status: {containerStatuses: [{name: model, image: i, imageID: '', ready: false, restartCount: 4, state: {waiting: {reason: CrashLoopBackOff}}, lastState: {terminated: {exitCode: 1, reason: Error}}}]}",
                Some("CrashLoopBackOff"),
                "4 restarts, last exit code 1",
            ),
            (
                "status: {containerStatuses: [{name: model, image: i, imageID: '', ready: false, restartCount: 2, state: {waiting: {reason: CrashLoopBackOff}}, lastState: {terminated: {exitCode: 137, reason: OOMKilled}}}]}",
                Some("OOMKilled"),
                "out of memory",
            ),
            (
                "status: {initContainerStatuses: [{name: adapter-a, image: a, imageID: '', ready: false, restartCount: 0, state: {waiting: {reason: ErrImagePull}}}]}",
                Some("ImagePullError"),
                "container adapter-a",
            ),
            (
                "status: {conditions: [{type: PodScheduled, status: 'False', reason: Unschedulable, message: '0/3 nodes are available: 3 Insufficient nvidia.com/gpu.'}]}",
                Some("Unschedulable"),
                "3 Insufficient nvidia.com/gpu",
            ),
            (
                "status: {phase: Running, containerStatuses: [{name: model, image: i, imageID: '', ready: false, restartCount: 0, state: {running: {}}}]}",
                None,
                "",
            ),
            (
                "status: {containerStatuses: [{name: model, image: i, imageID: '', ready: false, restartCount: 0, state: {waiting: {reason: CreateContainerConfigError, message: 'secret \"hf\" not found'}}}]}",
                Some("ContainerConfigError"),
                "secret \"hf\" not found",
            ),
        ];
        for (y, want, text) in table {
            let pod: Pod = obj(&format!("metadata: {{name: p-0}}\n{y}"));
            let got = classify_pod(&pod);
            assert_eq!(got.as_ref().map(|f| f.reason.as_str()), want, "{y}");
            if let Some(f) = got {
                assert!(f.message.contains(text), "{}", f.message);
                assert!(f.message.contains("p-0"), "{}", f.message);
            }
        }
    }

    #[test]
    fn runtime_termination_messages_become_the_reason() {
        let pod = |env: &str| -> Pod {
            serde_yaml::from_str(&format!(
                "metadata: {{name: w-0}}\nspec: {{containers: [{{name: model, env: [{env}]}}]}}\nstatus: {{containerStatuses: [{{name: model, image: i, imageID: '', ready: false, restartCount: 1, state: {{waiting: {{reason: CrashLoopBackOff}}}}, lastState: {{terminated: {{exitCode: 1, reason: Error, message: 'ModelDownloadUnauthorized: downloading the weights failed: the hub answered 401 for a/b: the repository is gated or private and HF_TOKEN is not set'}}}}}}]}}"
            ))
            .expect("pod")
        };
        let f = classify_pod(&pod("{name: X, value: y}")).expect("a failure");
        assert_eq!(f.reason, Reason::ModelDownloadUnauthorized);
        assert!(f.message.contains("answered 401 for a/b"), "{}", f.message);
        assert!(
            f.message.ends_with("set inference.preset.presetOptions.modelAccessSecret to a Secret with key HF_TOKEN holding a Hugging Face token that has access to the repository"),
            "{}",
            f.message
        );
        let f = classify_pod(&pod(
            "{name: HF_TOKEN, valueFrom: {secretKeyRef: {name: hf-token, key: HF_TOKEN}}}",
        ))
        .expect("a failure");
        assert!(
            f.message.contains("Secret hf-token (key HF_TOKEN)"),
            "{}",
            f.message
        );
        let other: Pod = serde_yaml::from_str(
            "metadata: {name: w-0}\nstatus: {containerStatuses: [{name: model, image: i, imageID: '', ready: false, restartCount: 0, state: {terminated: {exitCode: 1, message: 'ModelLoadFailed: loading the model failed: bad'}}}]}",
        )
        .expect("pod");
        let f = classify_pod(&other).expect("a failure");
        assert_eq!(f.reason, Reason::ModelLoadFailed);
        assert!(f.message.contains("kubectl logs w-0 -c model --previous"));
        let unknown: Pod = serde_yaml::from_str(
            "metadata: {name: w-0}\nstatus: {containerStatuses: [{name: model, image: i, imageID: '', ready: false, restartCount: 0, state: {terminated: {exitCode: 1, message: 'panic: something'}}}]}",
        )
        .expect("pod");
        assert_eq!(classify_pod(&unknown), None);
    }

    #[test]
    fn last_transition_time_moves_only_on_a_flip() {
        let t0 = time("2026-01-01T00:00:00Z");
        let t1 = time("2026-01-01T00:05:00Z");
        let first = merge(
            &[],
            &[Cond::no("ResourceReady", Reason::Provisioning, "0 of 1")],
            &t0,
            Some(1),
        );
        let same = merge(
            &first,
            &[Cond::no("ResourceReady", Reason::QuotaExceeded, "quota")],
            &t1,
            Some(1),
        );
        assert_eq!(same[0].last_transition_time, t0);
        assert_eq!(same[0].reason, "QuotaExceeded");
        let flipped = merge(
            &same,
            &[Cond::yes("ResourceReady", Reason::Ready, "1 of 1")],
            &t1,
            Some(2),
        );
        assert_eq!(flipped[0].last_transition_time, t1);
        assert_eq!(flipped[0].observed_generation, Some(2));
        let ev = transitions(&first, &same);
        assert_eq!(ev.len(), 1);
        assert!(ev[0].3, "quota is a warning");
        assert!(transitions(&same, &same).is_empty());
        // Progress is no Event; turning true is one.
        assert!(transitions(&[], &first).is_empty(), "provisioning");
        let ev = transitions(&first, &flipped);
        assert_eq!(ev.len(), 1);
        assert!(!ev[0].3, "ready is Normal");
    }

    #[test]
    fn the_workspace_turning_ready_is_one_event_naming_its_conditions_and_each_failure_its_own() {
        let t0 = time("2026-01-01T00:00:00Z");
        // The three conditions after `old`: (ResourceReady, InferenceReady, WorkspaceSucceeded).
        let then = |old: &[Condition], [r, i, w]: [Cond; 3]| merge(old, &[r, i, w], &t0, Some(1));
        let loading = || Cond::no("InferenceReady", Reason::Loading, "loading");
        let waiting = || Cond::no("WorkspaceSucceeded", Reason::Provisioning, "waiting");
        let nodes = || Cond::yes("ResourceReady", Reason::Ready, "1 of 1 nodes");
        let pending = then(
            &[],
            [
                Cond::no("ResourceReady", Reason::Provisioning, "0 of 1"),
                loading(),
                waiting(),
            ],
        );
        assert!(notices(&[], &pending).is_empty(), "progress is no Event");
        let nodes_up = then(&pending, [nodes(), loading(), waiting()]);
        assert!(
            notices(&pending, &nodes_up).is_empty(),
            "a condition turning true on the way is no Event"
        );
        let ready = then(
            &pending,
            [
                nodes(),
                Cond::yes("InferenceReady", Reason::Ready, "serving"),
                Cond::yes("WorkspaceSucceeded", Reason::Ready, "ready"),
            ],
        );
        assert_eq!(
            notices(&pending, &ready),
            vec![Notice {
                reason: "Ready".into(),
                note: "ResourceReady: 1 of 1 nodes; InferenceReady: serving; WorkspaceSucceeded: ready"
                    .into(),
                warning: false,
            }]
        );
        assert!(notices(&ready, &ready).is_empty());
        let broken = then(
            &ready,
            [
                nodes(),
                Cond::no("InferenceReady", Reason::OomKilled, "out of memory"),
                Cond::no("WorkspaceSucceeded", Reason::OomKilled, "out of memory"),
            ],
        );
        let ev = notices(&ready, &broken);
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert!(
            ev.iter().all(|n| n.warning && n.reason == "OOMKilled"),
            "{ev:?}"
        );
        assert_eq!(ev[0].note, "InferenceReady: out of memory");
    }

    fn census(ready: &[&str]) -> NodeCensus {
        NodeCensus {
            ready: ready.iter().map(|s| s.to_string()).collect(),
            ..NodeCensus::default()
        }
    }

    fn observed<'a>(
        p: Provisioner,
        c: &'a NodeCensus,
        r: &'a ProvisionReport,
        sts: Option<&'a StatefulSet>,
        pods: &'a [Pod],
    ) -> Observed<'a> {
        Observed {
            provisioner: p,
            kind: Some(WorkloadKind::Inference),
            invalid: None,
            target: 1,
            census: c,
            provision: r,
            statefulset: sts,
            job: None,
            pods,
            name_taken: None,
        }
    }

    #[test]
    fn a_taken_child_name_fails_the_workload_condition_with_the_fix() {
        let now = time("2026-01-01T00:00:00Z");
        let one = census(&["n1"]);
        let ok = ProvisionReport::default();
        let why = "Service default/w already exists and was not created for this workspace; rename or delete that Service".to_string();
        for (yaml, kind, type_) in [
            (
                include_str!("../../examples/inference/kaito_workspace_phi_3.yaml"),
                WorkloadKind::Inference,
                "InferenceReady",
            ),
            (
                include_str!("../../examples/fine-tuning/kaito_workspace_tuning_phi_3.yaml"),
                WorkloadKind::Tuning,
                "JobStarted",
            ),
        ] {
            let w = ws(yaml);
            let mut o = observed(Provisioner::Karpenter, &one, &ok, None, &[]);
            o.kind = Some(kind);
            o.name_taken = Some(why.clone());
            let s = compute(&w, &o, &now);
            let c = s.conditions.expect("conditions");
            let work = c.iter().find(|c| c.type_ == type_).expect("work condition");
            assert_eq!(work.status, "False");
            assert_eq!(work.reason, "ChildNameTaken");
            assert_eq!(work.message, why);
            let summary = c
                .iter()
                .find(|c| c.type_ == "WorkspaceSucceeded")
                .expect("summary");
            assert_eq!(summary.reason, "ChildNameTaken", "{summary:?}");
            assert!(summary.message.contains("rename or delete"), "{summary:?}");
        }
    }

    #[test]
    fn a_blocked_deletion_adds_one_condition_and_keeps_the_others() {
        let t0 = time("2026-01-01T00:00:00Z");
        let t1 = time("2026-01-01T00:01:00Z");
        let other = Condition {
            type_: "ResourceReady".into(),
            status: "True".into(),
            reason: "Ready".into(),
            message: "1 of 1".into(),
            observed_generation: None,
            last_transition_time: t0.clone(),
        };
        let first = with_deletion_blocked(std::slice::from_ref(&other), "401", &t0, Some(2));
        assert_eq!(first.len(), 2);
        assert_eq!(first[0], other);
        assert_eq!(first[1].type_, "DeletionBlocked");
        assert_eq!(first[1].status, "True");
        assert_eq!(first[1].message, "401");
        let second = with_deletion_blocked(&first, "403", &t1, Some(2));
        assert_eq!(second.len(), 2, "replaced, not added");
        assert_eq!(second[1].message, "403");
        assert_eq!(second[1].last_transition_time, t0, "still blocked since t0");
    }

    #[test]
    fn a_new_statefulset_reads_the_same_until_ready_and_an_update_says_it_rolls_out() {
        let w = ws(include_str!(
            "../../examples/inference/kaito_workspace_phi_3.yaml"
        ));
        let now = time("2026-01-01T00:00:00Z");
        let one = census(&["n1"]);
        let ok = ProvisionReport::default();
        let message = |status: &str| {
            let sts: StatefulSet = obj(&format!(
                "metadata: {{name: w, generation: 1}}\nspec: {{replicas: 1, serviceName: h, selector: {{}}, template: {{}}}}\n{status}"
            ));
            let o = observed(Provisioner::Byo, &one, &ok, Some(&sts), &[]);
            let c = compute(&w, &o, &now);
            let inference = c
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == CONDITION_INFERENCE_READY)
                .expect("InferenceReady");
            assert_eq!(inference.status, "False");
            inference.message
        };
        // Just created (no status yet), then seen with its pod starting: one message.
        let created = message("");
        let starting = message(
            "status: {replicas: 1, readyReplicas: 0, updatedReplicas: 1, observedGeneration: 1, currentRevision: w-1, updateRevision: w-1}",
        );
        assert_eq!(created, starting);
        assert!(!created.contains("rolling out"), "{created}");
        // A changed spec not seen yet, or pods of the previous revision: a rollout.
        for status in [
            "status: {replicas: 1, readyReplicas: 1, updatedReplicas: 1, observedGeneration: 0}",
            "status: {replicas: 1, readyReplicas: 0, updatedReplicas: 0, observedGeneration: 1, currentRevision: w-1, updateRevision: w-2}",
        ] {
            assert!(
                message(status).contains("rolling out a new revision"),
                "{status}"
            );
        }
    }

    #[test]
    fn inference_status_table() {
        let w = ws(include_str!(
            "../../examples/inference/kaito_workspace_phi_3.yaml"
        ));
        let now = time("2026-01-01T00:00:00Z");
        let ready_sts: StatefulSet = obj(
            "metadata: {name: w, generation: 2}\nspec: {replicas: 1, serviceName: h, selector: {}, template: {}}\nstatus: {replicas: 1, readyReplicas: 1, updatedReplicas: 1, observedGeneration: 2}",
        );
        let loading_sts: StatefulSet = obj(
            "metadata: {name: w, generation: 2}\nspec: {replicas: 1, serviceName: h, selector: {}, template: {}}\nstatus: {replicas: 1, readyReplicas: 0, updatedReplicas: 1, observedGeneration: 2}",
        );
        let crash: Pod = obj(
            "metadata: {name: w-0}\nstatus: {containerStatuses: [{name: model, image: i, imageID: '', ready: false, restartCount: 3, state: {waiting: {reason: CrashLoopBackOff}}, lastState: {terminated: {exitCode: 2}}}]}",
        );
        let none = NodeCensus::default();
        let none_cpu = NodeCensus {
            cpu_only: true,
            ..NodeCensus::default()
        };
        let one = census(&["n1"]);
        let quota = ProvisionReport { failure: Some((Reason::QuotaExceeded, "Operation could not be completed as it results in exceeding approved standardNCSv3Family Cores quota".into())), progress: None, requeue_after: None };
        let ok = ProvisionReport::default();
        let crash_pods = [crash];
        // (observed, ResourceReady, InferenceReady, WorkspaceSucceeded reason, state, text in a message)
        let table: Vec<(Observed<'_>, bool, bool, &str, &str, &str)> = vec![
            (
                observed(Provisioner::Byo, &none, &ok, None, &[]),
                false,
                false,
                "NodesNotReady",
                "Pending",
                "no GPU nodes match the label selector apps=phi-3",
            ),
            (
                observed(Provisioner::Byo, &none_cpu, &ok, None, &[]),
                false,
                false,
                "NodesNotReady",
                "Pending",
                "no CPU-only nodes match the label selector apps=phi-3; label 1 CPU-only node(s)",
            ),
            (
                observed(Provisioner::Aks, &none, &quota, None, &[]),
                false,
                false,
                "QuotaExceeded",
                "Pending",
                "exceeding approved",
            ),
            (
                observed(Provisioner::Karpenter, &none, &ok, None, &[]),
                false,
                false,
                "Provisioning",
                "Pending",
                "karpenter provisioner",
            ),
            (
                observed(Provisioner::Karpenter, &one, &ok, Some(&loading_sts), &[]),
                true,
                false,
                "Loading",
                "Pending",
                "model is loading",
            ),
            (
                observed(
                    Provisioner::Karpenter,
                    &one,
                    &ok,
                    Some(&loading_sts),
                    &crash_pods,
                ),
                true,
                false,
                "CrashLoopBackOff",
                "Pending",
                "keeps crashing",
            ),
            (
                observed(Provisioner::Karpenter, &one, &ok, Some(&ready_sts), &[]),
                true,
                true,
                "Ready",
                "Ready",
                "serving phi-3-mini-4k-instruct",
            ),
        ];
        for (i, (o, rr, ir, reason, st, text)) in table.into_iter().enumerate() {
            let s = compute(&w, &o, &now);
            let conds = s.conditions.expect("conditions");
            assert_eq!(conds.len(), 3);
            assert_eq!(conds[0].type_, "ResourceReady");
            assert_eq!(conds[0].status == "True", rr, "case {i}: {:?}", conds[0]);
            assert_eq!(conds[1].type_, "InferenceReady");
            assert_eq!(conds[1].status == "True", ir, "case {i}: {:?}", conds[1]);
            assert_eq!(conds[2].reason, reason, "case {i}: {:?}", conds[2]);
            assert_eq!(s.state.as_deref(), Some(st), "case {i}");
            assert!(
                conds.iter().any(|c| c.message.contains(text)),
                "case {i}: {conds:?}"
            );
            for c in &conds {
                assert!(
                    !c.reason.is_empty() && !c.message.is_empty(),
                    "case {i}: {c:?}"
                );
            }
        }
    }

    #[test]
    fn ready_then_broken_is_not_ready() {
        let mut w = ws(include_str!(
            "../../examples/inference/kaito_workspace_phi_3.yaml"
        ));
        w.status = Some(WorkspaceStatus {
            state: Some("Ready".into()),
            ..WorkspaceStatus::default()
        });
        let none = NodeCensus::default();
        let ok = ProvisionReport::default();
        let s = compute(
            &w,
            &observed(Provisioner::Byo, &none, &ok, None, &[]),
            &time("2026-01-01T00:00:00Z"),
        );
        assert_eq!(s.state.as_deref(), Some("NotReady"));
    }

    #[test]
    fn invalid_spec_fails_every_condition_with_the_reason() {
        let w = ws(include_str!(
            "../../examples/inference/kaito_workspace_phi_3.yaml"
        ));
        let none = NodeCensus::default();
        let ok = ProvisionReport::default();
        let mut o = observed(Provisioner::Byo, &none, &ok, None, &[]);
        o.invalid = Some("preset \"x\" is not in the catalog".into());
        let s = compute(&w, &o, &time("2026-01-01T00:00:00Z"));
        assert_eq!(s.state.as_deref(), Some("Failed"));
        assert!(
            s.conditions
                .expect("c")
                .iter()
                .all(|c| c.reason == "InvalidSpec" && c.message.contains("edit the workspace"))
        );
    }

    #[test]
    fn tuning_status_table() {
        let w = ws(include_str!(
            "../../examples/fine-tuning/kaito_workspace_tuning_phi_3.yaml"
        ));
        let now = time("2026-01-01T00:00:00Z");
        let one = census(&["n1"]);
        let ok = ProvisionReport::default();
        let running: Job =
            obj("metadata: {name: j}\nstatus: {startTime: '2026-01-01T00:00:00Z', active: 1}");
        let done: Job = obj(
            "metadata: {name: j}\nstatus: {startTime: '2026-01-01T00:00:00Z', succeeded: 1, conditions: [{type: Complete, status: 'True'}]}",
        );
        let failed: Job = obj(
            "metadata: {name: j}\nstatus: {startTime: '2026-01-01T00:00:00Z', failed: 3, conditions: [{type: Failed, status: 'True', message: 'Job has reached the specified backoff limit'}]}",
        );
        let table = [
            (None, false, "NodesNotReady", "Pending"),
            (Some(&running), true, "JobRunning", "Running"),
            (Some(&done), true, "JobSucceeded", "Succeeded"),
            (Some(&failed), true, "JobFailed", "Failed"),
        ];
        for (job, started, reason, st) in table {
            let o = Observed {
                provisioner: Provisioner::Karpenter,
                kind: Some(WorkloadKind::Tuning),
                invalid: None,
                target: 1,
                census: &one,
                provision: &ok,
                statefulset: None,
                job,
                pods: &[],
                name_taken: None,
            };
            let s = compute(&w, &o, &now);
            let c = s.conditions.expect("c");
            assert_eq!(c[1].type_, "JobStarted");
            assert_eq!(c[1].status == "True", started, "{reason}: {:?}", c[1]);
            assert_eq!(c[2].reason, reason);
            assert_eq!(c[2].status == "True", reason == "JobSucceeded");
            assert_eq!(s.state.as_deref(), Some(st));
        }
    }

    #[test]
    fn the_failed_tuning_step_is_named() {
        let pods: [Pod; 2] = [
            obj(
                "metadata: {name: j-b}\nstatus: {initContainerStatuses: [{name: data-downloader, image: a, imageID: '', ready: true, restartCount: 0, state: {terminated: {exitCode: 0}}}, {name: trainer, image: t, imageID: '', ready: false, restartCount: 0, state: {terminated: {exitCode: 1, reason: Error}}}]}",
            ),
            obj(
                "metadata: {name: j-c}\nstatus: {containerStatuses: [{name: publisher, image: a, imageID: '', ready: false, restartCount: 0, state: {terminated: {exitCode: 1, reason: Error}}}]}",
            ),
        ];
        assert_eq!(failed_container(&pods).as_deref(), Some("trainer"));
        assert_eq!(failed_container(&pods[1..]).as_deref(), Some("publisher"));
        assert_eq!(failed_container(&[]), None);
    }
}
