//! The `reason` of every Workspace condition, as one enum: the controller writes only these,
//! and `kubectl kaito status` matches them exhaustively, so a reason added here is a compile
//! error in every place that has to say something about it.

use std::fmt;
use std::str::FromStr;

/// Why a Workspace condition has its status: the machine-readable `reason` the controller
/// writes (and the Event reason of its transitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Everything the condition checks is true.
    Ready,
    /// Nodes are being provisioned.
    Provisioning,
    /// The spec cannot be satisfied as written.
    InvalidSpec,
    /// Fewer matching GPU nodes than the workspace needs.
    NodesNotReady,
    /// The cloud refused for lack of quota.
    QuotaExceeded,
    /// The VM size is not offered in the region.
    SkuNotAvailable,
    /// Another cloud error.
    CloudError,
    /// A container image cannot be pulled.
    ImagePullError,
    /// A container's configuration refers to something missing (Secret, ConfigMap).
    ContainerConfigError,
    /// A container keeps crashing.
    CrashLoopBackOff,
    /// A container ran out of memory.
    OomKilled,
    /// The scheduler cannot place a pod.
    Unschedulable,
    /// The model is still loading.
    Loading,
    /// The hub refused the weights download (401/403): the token is missing or has no access.
    ModelDownloadUnauthorized,
    /// The hub has no such repository, revision or file.
    ModelNotFound,
    /// The weights download failed after its retries (network, integrity).
    ModelDownloadFailed,
    /// The runtime could not load the downloaded model.
    ModelLoadFailed,
    /// The tuning Job runs.
    JobRunning,
    /// The tuning Job completed.
    JobSucceeded,
    /// The tuning Job failed.
    JobFailed,
    /// A child the workload needs has its name taken by an object that is not the
    /// workspace's (a Service, StatefulSet, Job, ConfigMap, NodeClaim or agent pool).
    ChildNameTaken,
    /// Releasing the workspace's cloud resources fails, so its deletion waits.
    DeletionBlocked,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 22] = [
        Self::Ready,
        Self::Provisioning,
        Self::InvalidSpec,
        Self::NodesNotReady,
        Self::QuotaExceeded,
        Self::SkuNotAvailable,
        Self::CloudError,
        Self::ImagePullError,
        Self::ContainerConfigError,
        Self::CrashLoopBackOff,
        Self::OomKilled,
        Self::Unschedulable,
        Self::Loading,
        Self::ModelDownloadUnauthorized,
        Self::ModelNotFound,
        Self::ModelDownloadFailed,
        Self::ModelLoadFailed,
        Self::JobRunning,
        Self::JobSucceeded,
        Self::JobFailed,
        Self::ChildNameTaken,
        Self::DeletionBlocked,
    ];

    /// The reasons `kaito-runtime` writes to its termination log (`Reason: message`).
    pub const RUNTIME: [Reason; 4] = [
        Self::ModelDownloadUnauthorized,
        Self::ModelNotFound,
        Self::ModelDownloadFailed,
        Self::ModelLoadFailed,
    ];

    /// The text written into a condition's `reason`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Provisioning => "Provisioning",
            Self::InvalidSpec => "InvalidSpec",
            Self::NodesNotReady => "NodesNotReady",
            Self::QuotaExceeded => "QuotaExceeded",
            Self::SkuNotAvailable => "SKUNotAvailable",
            Self::CloudError => "CloudError",
            Self::ImagePullError => "ImagePullError",
            Self::ContainerConfigError => "ContainerConfigError",
            Self::CrashLoopBackOff => "CrashLoopBackOff",
            Self::OomKilled => "OOMKilled",
            Self::Unschedulable => "Unschedulable",
            Self::Loading => "Loading",
            Self::ModelDownloadUnauthorized => "ModelDownloadUnauthorized",
            Self::ModelNotFound => "ModelNotFound",
            Self::ModelDownloadFailed => "ModelDownloadFailed",
            Self::ModelLoadFailed => "ModelLoadFailed",
            Self::JobRunning => "JobRunning",
            Self::JobSucceeded => "JobSucceeded",
            Self::JobFailed => "JobFailed",
            Self::ChildNameTaken => "ChildNameTaken",
            Self::DeletionBlocked => "DeletionBlocked",
        }
    }

    /// Whether a False condition with this reason is only progress (nodes or a model on their
    /// way, a Job running): its Event is Normal, not a Warning.
    pub const fn is_progress(self) -> bool {
        matches!(
            self,
            Self::Provisioning | Self::Loading | Self::NodesNotReady | Self::JobRunning
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `reason` text that is not one of [`Reason`]'s (written by another version, or by hand).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a Workspace condition reason")]
pub struct UnknownReason(pub String);

impl FromStr for Reason {
    type Err = UnknownReason;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownReason(s.to_string()))
    }
}

impl From<Reason> for String {
    fn from(r: Reason) -> Self {
        r.as_str().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_from_its_text() {
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>(), Ok(r));
        }
        let mut texts: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), Reason::ALL.len(), "two reasons share a text");
        assert_eq!(
            "Bogus".parse::<Reason>(),
            Err(UnknownReason("Bogus".into()))
        );
    }

    #[test]
    fn the_texts_are_the_ones_clients_match() {
        // Written into stored Workspaces: changing one breaks existing clients and alerts.
        assert_eq!(Reason::SkuNotAvailable.as_str(), "SKUNotAvailable");
        assert_eq!(Reason::OomKilled.as_str(), "OOMKilled");
        assert_eq!(Reason::ChildNameTaken.to_string(), "ChildNameTaken");
    }
}
