//! Well-known names: API group and versions, labels, annotations, condition types, reasons
//! and states.

/// API group of the Workspace resource.
pub const GROUP: &str = "kaito.sh";
/// The version the seed documents use.
pub const V1ALPHA1: &str = "v1alpha1";
/// The storage version.
pub const V1BETA1: &str = "v1beta1";
/// Kind of the resource.
pub const KIND: &str = "Workspace";
/// Plural resource name.
pub const PLURAL: &str = "workspaces";

/// Label on nodes, node claims and pods: the owning workspace's name. Reserved.
pub const LABEL_WORKSPACE: &str = "kaito.sh/workspace";
/// Label on nodes, node claims and pods: the owning workspace's namespace. Reserved.
pub const LABEL_WORKSPACE_NAMESPACE: &str = "kaito.sh/workspacenamespace";
/// Labels users may not put in their own selectors.
pub const RESERVED_LABELS: [&str; 2] = [LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE];

/// Annotation `"True"`: expose the workspace through a LoadBalancer Service.
pub const ANNOTATION_ENABLE_LB: &str = "kaito.sh/enablelb";
/// Annotation: the serving runtime to use (upstream compatibility; ours serves with mistral.rs).
pub const ANNOTATION_RUNTIME: &str = "kaito.sh/runtime";
/// Annotation `"true"`: GPU-memory rejections become admission warnings.
pub const ANNOTATION_BYPASS_RESOURCE_CHECKS: &str = "kaito.sh/bypass-resource-checks";
/// Annotation written by the webhook: why `resource.instanceType`/`count` were chosen.
pub const ANNOTATION_SIZING: &str = "kaito.sh/sizing";

/// Finalizer that holds a Workspace until its cloud nodes are gone.
pub const FINALIZER: &str = "workspace.finalizer.kaito.sh";

/// Condition: the nodes exist, are Ready and expose `nvidia.com/gpu`.
pub const CONDITION_RESOURCE_READY: &str = "ResourceReady";
/// Condition: every serving replica passes the runtime health check.
pub const CONDITION_INFERENCE_READY: &str = "InferenceReady";
/// Condition: the tuning Job has started.
pub const CONDITION_JOB_STARTED: &str = "JobStarted";
/// Condition: the summary — served, or tuned and published.
pub const CONDITION_WORKSPACE_SUCCEEDED: &str = "WorkspaceSucceeded";

/// Values of `status.state`.
pub mod state {
    /// Nodes or workloads are being created.
    pub const PENDING: &str = "Pending";
    /// The model is served.
    pub const READY: &str = "Ready";
    /// Something that was ready is not any more.
    pub const NOT_READY: &str = "NotReady";
    /// The tuning Job runs.
    pub const RUNNING: &str = "Running";
    /// The tuning Job finished and the adapter was published.
    pub const SUCCEEDED: &str = "Succeeded";
    /// The workspace cannot make progress without a change.
    pub const FAILED: &str = "Failed";
}

/// Machine-readable `reason`s of conditions and Events.
pub mod reason {
    /// Everything the condition checks is true.
    pub const READY: &str = "Ready";
    /// Nodes are being provisioned.
    pub const PROVISIONING: &str = "Provisioning";
    /// The spec cannot be satisfied as written.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Fewer matching GPU nodes than the workspace needs.
    pub const NODES_NOT_READY: &str = "NodesNotReady";
    /// The cloud refused for lack of quota.
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// The VM size is not offered in the region.
    pub const SKU_NOT_AVAILABLE: &str = "SKUNotAvailable";
    /// Another cloud error.
    pub const CLOUD_ERROR: &str = "CloudError";
    /// A container image cannot be pulled.
    pub const IMAGE_PULL_ERROR: &str = "ImagePullError";
    /// A container keeps crashing.
    pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
    /// A container ran out of memory.
    pub const OOM_KILLED: &str = "OOMKilled";
    /// The scheduler cannot place a pod.
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    /// The model is still loading.
    pub const LOADING: &str = "Loading";
    /// The hub refused the weights download (401/403): the token is missing or has no access.
    pub const MODEL_DOWNLOAD_UNAUTHORIZED: &str = "ModelDownloadUnauthorized";
    /// The hub has no such repository, revision or file.
    pub const MODEL_NOT_FOUND: &str = "ModelNotFound";
    /// The weights download failed after its retries (network, integrity).
    pub const MODEL_DOWNLOAD_FAILED: &str = "ModelDownloadFailed";
    /// The runtime could not load the downloaded model.
    pub const MODEL_LOAD_FAILED: &str = "ModelLoadFailed";
    /// The reasons `kaito-runtime` writes to its termination log (`Reason: message`).
    pub const RUNTIME_REASONS: [&str; 4] = [
        MODEL_DOWNLOAD_UNAUTHORIZED,
        MODEL_NOT_FOUND,
        MODEL_DOWNLOAD_FAILED,
        MODEL_LOAD_FAILED,
    ];
    /// The tuning Job failed.
    pub const JOB_FAILED: &str = "JobFailed";
    /// The tuning Job completed.
    pub const JOB_SUCCEEDED: &str = "JobSucceeded";
}
