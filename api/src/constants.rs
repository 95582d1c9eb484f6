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

/// The text of each [`crate::Reason`], for code that carries a reason as text (a provisioner's
/// report, a test); the enum is the one list.
pub mod reason {
    use crate::Reason;

    /// [`Reason::Ready`].
    pub const READY: &str = Reason::Ready.as_str();
    /// [`Reason::Provisioning`].
    pub const PROVISIONING: &str = Reason::Provisioning.as_str();
    /// [`Reason::InvalidSpec`].
    pub const INVALID_SPEC: &str = Reason::InvalidSpec.as_str();
    /// [`Reason::NodesNotReady`].
    pub const NODES_NOT_READY: &str = Reason::NodesNotReady.as_str();
    /// [`Reason::QuotaExceeded`].
    pub const QUOTA_EXCEEDED: &str = Reason::QuotaExceeded.as_str();
    /// [`Reason::SkuNotAvailable`].
    pub const SKU_NOT_AVAILABLE: &str = Reason::SkuNotAvailable.as_str();
    /// [`Reason::CloudError`].
    pub const CLOUD_ERROR: &str = Reason::CloudError.as_str();
    /// [`Reason::ChildNameTaken`].
    pub const CHILD_NAME_TAKEN: &str = Reason::ChildNameTaken.as_str();
}
