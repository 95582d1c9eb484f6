//! Node provisioners behind one trait: `byo` (nothing to create) and `karpenter` (NodeClaims).
//! The `aks` provisioner's pure parts live in [`crate::aks`].

use kaito_api::{LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE, Workspace};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::{Api, Client};

use crate::config::{Config, KarpenterConfig, Provisioner};
use crate::naming::{self, FIELD_MANAGER};
use crate::nodes;
use crate::plan::WorkspacePlan;
use crate::status::ProvisionReport;

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

/// Creates and removes the GPU nodes of workspaces.
pub trait NodeProvisioner {
    /// Makes sure the nodes `plan` needs exist or are being created; reports progress or a
    /// failure the user must act on.
    fn ensure(
        &self,
        ws: &Workspace,
        plan: &WorkspacePlan,
    ) -> impl Future<Output = Result<ProvisionReport, ProvisionError>> + Send;
    /// Removes everything created for `ws`; true once nothing is left.
    fn release(&self, ws: &Workspace) -> impl Future<Output = Result<bool, ProvisionError>> + Send;
}

/// Bring your own nodes: nothing to create, nothing to remove.
#[derive(Clone, Debug, Default)]
pub struct Byo;

impl NodeProvisioner for Byo {
    async fn ensure(
        &self,
        _: &Workspace,
        _: &WorkspacePlan,
    ) -> Result<ProvisionReport, ProvisionError> {
        Ok(ProvisionReport::default())
    }
    async fn release(&self, _: &Workspace) -> Result<bool, ProvisionError> {
        Ok(true)
    }
}

/// `karpenter.sh/v1` NodeClaims, one per node, named deterministically.
#[derive(Clone)]
pub struct Karpenter {
    api: Api<DynamicObject>,
    cfg: KarpenterConfig,
}

/// The NodeClaim API resource.
pub fn nodeclaim_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("karpenter.sh", "v1", "NodeClaim"),
        "nodeclaims",
    )
}

/// Label selector of everything made for `ws`.
pub fn workspace_selector(ws: &Workspace) -> String {
    format!(
        "{LABEL_WORKSPACE}={},{LABEL_WORKSPACE_NAMESPACE}={}",
        naming::name(ws),
        naming::namespace(ws)
    )
}

impl Karpenter {
    /// A provisioner using `client`.
    pub fn new(client: Client, cfg: KarpenterConfig) -> Self {
        Self {
            api: Api::all_with(client, &nodeclaim_resource()),
            cfg,
        }
    }

    async fn claims(&self, ws: &Workspace) -> Result<Vec<DynamicObject>, kube::Error> {
        Ok(self
            .api
            .list(&ListParams::default().labels(&workspace_selector(ws)))
            .await?
            .items)
    }
}

impl NodeProvisioner for Karpenter {
    async fn ensure(
        &self,
        ws: &Workspace,
        plan: &WorkspacePlan,
    ) -> Result<ProvisionReport, ProvisionError> {
        let count = u32::try_from(plan.node_count).unwrap_or(1);
        let existing = self.claims(ws).await?;
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let mut created = 0;
        for i in 0..count {
            let want = nodes::nodeclaim(ws, plan, &self.cfg, i);
            let name = naming::nodeclaim_name(naming::namespace(ws), naming::name(ws), i);
            // NodeClaim specs are immutable in Karpenter: create once, never re-apply.
            if existing
                .iter()
                .any(|c| c.metadata.name.as_deref() == Some(name.as_str()))
            {
                continue;
            }
            self.api.patch(&name, &pp, &Patch::Apply(&want)).await?;
            created += 1;
        }
        let mut problems = Vec::new();
        for c in &existing {
            let name = c.metadata.name.clone().unwrap_or_default();
            let index = name.rsplit('-').next().and_then(|i| i.parse::<u32>().ok());
            if index.is_some_and(|i| i >= count) {
                self.api.delete(&name, &DeleteParams::background()).await?;
                continue;
            }
            for cond in c.data["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if cond["status"] == "False" && cond["type"] == "Launched" {
                    problems.push(format!(
                        "NodeClaim {name} not launched: {}",
                        cond["message"]
                            .as_str()
                            .unwrap_or_else(|| cond["reason"].as_str().unwrap_or("unknown"))
                    ));
                }
            }
        }
        let progress = if problems.is_empty() {
            format!(
                "{count} NodeClaim(s) requested{}; waiting for Karpenter to launch and register the nodes",
                if created > 0 {
                    format!(" ({created} new)")
                } else {
                    String::new()
                }
            )
        } else {
            problems.join("; ")
        };
        Ok(ProvisionReport {
            failure: None,
            progress: Some(progress),
            requeue_after: None,
        })
    }

    async fn release(&self, ws: &Workspace) -> Result<bool, ProvisionError> {
        let claims = self.claims(ws).await?;
        for c in &claims {
            if c.metadata.deletion_timestamp.is_none()
                && let Some(name) = &c.metadata.name
            {
                match self.api.delete(name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(claims.is_empty())
    }
}

/// The configured provisioner.
#[derive(Clone)]
pub enum AnyProvisioner {
    /// Bring your own nodes.
    Byo(Byo),
    /// Karpenter NodeClaims.
    Karpenter(Box<Karpenter>),
    /// AKS agent pools.
    Aks(Box<crate::aks::Aks>),
}

impl AnyProvisioner {
    /// The provisioner `config` names.
    pub fn new(config: &Config, client: Client) -> Result<Self, String> {
        match config.provisioner {
            Provisioner::Byo => Ok(Self::Byo(Byo)),
            Provisioner::Karpenter => Ok(Self::Karpenter(Box::new(Karpenter::new(
                client,
                config.karpenter.clone(),
            )))),
            Provisioner::Aks => {
                let aks = crate::aks::Aks::new(config.azure.clone()).map_err(|e| e.to_string())?;
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
}
