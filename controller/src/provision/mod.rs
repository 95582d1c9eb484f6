//! Node provisioners behind one trait, [`NodeProvisioner`]: [`byo`] (nothing to create),
//! [`karpenter`] (NodeClaims) and [`aks`] (AKS agent pools through Azure Resource Manager).
//! [`AnyProvisioner`] is the one the configuration names; each reports a [`ProvisionReport`]
//! that status turns into conditions.

pub mod aks;
pub mod byo;
pub mod karpenter;

use kaito_api::{Reason, Workspace};
use kube::Client;

pub use aks::Aks;
pub use byo::Byo;
pub use karpenter::{Karpenter, claim_mark, nodeclaim_resource, workspace_selector};

use crate::config::{Config, Provisioner};
use crate::plan::WorkspacePlan;

/// A provisioner failed to talk to its backend (transient: retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The Kubernetes API failed.
    #[error("node claims: {0}")]
    Kube(#[from] kube::Error),
    /// A built object did not serialize.
    #[error("node claims: {0}")]
    Serde(#[from] serde_json::Error),
    /// Azure Resource Manager failed transiently (throttling, 5xx, network).
    #[error("azure: {0}")]
    Azure(String),
}

/// What the provisioner reports about the nodes it manages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProvisionReport {
    /// A failure the user must act on: its reason (QuotaExceeded, SKUNotAvailable,
    /// CloudError, ChildNameTaken) and message.
    pub failure: Option<(Reason, String)>,
    /// What the provisioner is doing, for the message while nodes are not ready.
    pub progress: Option<String>,
    /// Look again after this long (a cloud operation in progress, or a cloud failure whose
    /// cause lies outside the spec); None: watches suffice.
    pub requeue_after: Option<std::time::Duration>,
}

/// Creates and removes the GPU nodes of workspaces.
pub trait NodeProvisioner {
    /// Makes sure the nodes `plan` needs exist or are being created; reports progress or a
    /// failure the user must act on.
    fn ensure(
        &self,
        ws: &Workspace,
        plan: &WorkspacePlan,
    ) -> impl Future<Output = Result<ProvisionReport, ProvisionError>> + Send;
    /// Removes everything created for `ws` (and only that: a pool or claim of its name that
    /// carries another workspace's UID is left alone); true once nothing is left.
    fn release(&self, ws: &Workspace) -> impl Future<Output = Result<bool, ProvisionError>> + Send;
    /// What [`Self::release`] would remove, and how to remove it by hand.
    fn cleanup_hint(&self, ws: &Workspace) -> String;
}

/// The configured provisioner.
#[derive(Clone)]
pub enum AnyProvisioner {
    /// Bring your own nodes.
    Byo(Byo),
    /// Karpenter NodeClaims.
    Karpenter(Box<Karpenter>),
    /// AKS agent pools.
    Aks(Box<Aks>),
}

impl AnyProvisioner {
    /// The provisioner `config` names.
    pub fn new(config: &Config, client: Client) -> Result<Self, String> {
        match config.provisioner {
            Provisioner::Byo => Ok(Self::Byo(Byo)),
            Provisioner::Karpenter => {
                let k = Karpenter::new(client.clone(), config.karpenter.clone());
                k.spawn_orphan_sweeper(client);
                Ok(Self::Karpenter(Box::new(k)))
            }
            Provisioner::Aks => {
                let aks = Aks::new(config.azure.clone()).map_err(|e| e.to_string())?;
                aks.spawn_orphan_sweeper(client);
                Ok(Self::Aks(Box::new(aks)))
            }
        }
    }
}

impl NodeProvisioner for AnyProvisioner {
    async fn ensure(
        &self,
        ws: &Workspace,
        plan: &WorkspacePlan,
    ) -> Result<ProvisionReport, ProvisionError> {
        match self {
            Self::Byo(p) => p.ensure(ws, plan).await,
            Self::Karpenter(p) => p.ensure(ws, plan).await,
            Self::Aks(p) => p.ensure(ws, plan).await,
        }
    }
    async fn release(&self, ws: &Workspace) -> Result<bool, ProvisionError> {
        match self {
            Self::Byo(p) => p.release(ws).await,
            Self::Karpenter(p) => p.release(ws).await,
            Self::Aks(p) => p.release(ws).await,
        }
    }
    fn cleanup_hint(&self, ws: &Workspace) -> String {
        match self {
            Self::Byo(p) => p.cleanup_hint(ws),
            Self::Karpenter(p) => p.cleanup_hint(ws),
            Self::Aks(p) => p.cleanup_hint(ws),
        }
    }
}
