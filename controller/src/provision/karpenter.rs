//! The `karpenter` provisioner: one `karpenter.sh/v1` NodeClaim per node, named
//! deterministically, created once (NodeClaim specs are immutable), deleted on release, and an
//! orphan sweep for claims whose workspace is gone.

use std::time::Duration;

use kaito_api::{LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE, Reason, Workspace};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use super::{NodeProvisioner, ProvisionError, ProvisionReport};
use crate::config::KarpenterConfig;
use crate::naming::{self, FIELD_MANAGER, LABEL_WORKSPACE_UID};
use crate::nodes;
use crate::ownership::{self, Mark, Marked};
use crate::plan::WorkspacePlan;

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

    /// Deletes the NodeClaim `name` (in the background); one already gone is fine.
    async fn delete_claim(&self, name: &str) -> Result<(), kube::Error> {
        match self.api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
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

/// The UID mark, workspace and namespace labels of a NodeClaim.
pub fn claim_mark(c: &DynamicObject) -> Mark {
    let l = c.labels();
    Mark {
        name: c.name_any(),
        namespace: l.get(LABEL_WORKSPACE_NAMESPACE).cloned(),
        workspace: l.get(LABEL_WORKSPACE).cloned(),
        uid: l.get(LABEL_WORKSPACE_UID).cloned(),
    }
}

/// How long the controller waits before looking again at a name held by someone else.
const NAME_TAKEN_REQUEUE: Duration = Duration::from_secs(60);

impl Karpenter {
    /// Deletes NodeClaims labelled for a workspace that no longer exists (or was recreated:
    /// another UID); returns their names. A workspace that cannot be looked up is skipped.
    pub async fn delete_orphans(&self, client: &Client) -> Result<Vec<String>, ProvisionError> {
        let claims = self
            .api
            .list(&ListParams::default().labels(LABEL_WORKSPACE))
            .await?
            .items;
        let mut deleted = Vec::new();
        for c in &claims {
            let mark = claim_mark(c);
            if !ownership::orphaned(client, &mark, Marked::NodeClaim).await {
                continue;
            }
            self.delete_claim(&mark.name).await?;
            deleted.push(mark.name);
        }
        Ok(deleted)
    }

    /// Looks for orphaned NodeClaims every `orphan_interval`, forever.
    pub fn spawn_orphan_sweeper(&self, client: Client) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(me.cfg.orphan_interval).await;
                match me.delete_orphans(&client).await {
                    Ok(d) if !d.is_empty() => info!(count = d.len(), "deleted orphaned NodeClaims"),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "sweeping orphaned NodeClaims"),
                }
            }
        });
    }

    /// Why the claim named `name` that is not among `ws`'s own is in the way, if it exists.
    async fn name_taken(
        &self,
        ws: &Workspace,
        name: &str,
    ) -> Result<Option<String>, ProvisionError> {
        let Some(c) = crate::reconcile::named(&self.api, name).await? else {
            return Ok(None);
        };
        let mark = claim_mark(&c);
        Ok(ownership::marked_for(mark.uid.as_deref(), ws).err().map(|why| {
            format!(
                "NodeClaim {name} already exists and was not created for this workspace: {why}; \
                 the controller leaves it untouched: if it is left over from a deleted workspace, \
                 delete it (`kubectl delete nodeclaim {name}`; the orphan sweeper also does \
                 within {} s), or recreate this workspace under another name",
                self.cfg.orphan_interval.as_secs()
            )
        }))
    }
}

impl NodeProvisioner for Karpenter {
    async fn ensure(
        &self,
        ws: &Workspace,
        plan: &WorkspacePlan,
    ) -> Result<ProvisionReport, ProvisionError> {
        let count = u32::try_from(plan.node_count).unwrap_or(1);
        // Only claims with this workspace's UID are its own: a same-named workspace deleted
        // before its claims were may have left some behind.
        let existing: Vec<DynamicObject> = self
            .claims(ws)
            .await?
            .into_iter()
            .filter(|c| ownership::marked_for(claim_mark(c).uid.as_deref(), ws).is_ok())
            .collect();
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let mut created = 0;
        let mut taken = Vec::new();
        for i in 0..count {
            let name = naming::nodeclaim_name(naming::namespace(ws), naming::name(ws), i);
            // NodeClaim specs are immutable in Karpenter: create once, never re-apply.
            if existing
                .iter()
                .any(|c| c.metadata.name.as_deref() == Some(name.as_str()))
            {
                continue;
            }
            // Create, never overwrite: a claim of this name that is not ours stays as it is.
            if let Some(why) = self.name_taken(ws, &name).await? {
                taken.push(why);
                continue;
            }
            let want: DynamicObject =
                serde_json::from_value(nodes::nodeclaim(ws, plan, &self.cfg, i))?;
            match self.api.create(&pp, &want).await {
                Ok(_) => created += 1,
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    if let Some(why) = self.name_taken(ws, &name).await? {
                        taken.push(why);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !taken.is_empty() {
            return Ok(ProvisionReport {
                failure: Some((Reason::ChildNameTaken, taken.join("; "))),
                progress: None,
                requeue_after: Some(NAME_TAKEN_REQUEUE),
            });
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
        let mut left = 0;
        for c in &self.claims(ws).await? {
            let mark = claim_mark(c);
            if let Err(why) = ownership::marked_for(mark.uid.as_deref(), ws) {
                warn!(claim = %mark.name, %why, "leaving a NodeClaim that is not this workspace's");
                continue;
            }
            left += 1;
            if c.metadata.deletion_timestamp.is_none() {
                self.delete_claim(&mark.name).await?;
            }
        }
        Ok(left == 0)
    }

    fn cleanup_hint(&self, ws: &Workspace) -> String {
        format!(
            "its NodeClaims: `kubectl delete nodeclaims -l {},{LABEL_WORKSPACE_UID}={}`",
            workspace_selector(ws),
            naming::uid(ws)
        )
    }
}
