//! The AKS agent-pool provisioner: the agent pool body the controller PUTs and the
//! classification of Azure Resource Manager errors into condition reasons (pure), and the
//! provisioner that drives the agent-pool API with them (create, follow, scale, release, orphan
//! sweep).
//!
//! `azure_mgmt_containerservice` 0.10 (default feature `package-preview-2023-01`) sends
//! `api-version=2023-01-02-preview` to
//! `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{cluster}/agentPools/{pool}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_mgmt_containerservice::models::AgentPool;
use futures::StreamExt;
use kaito_api::{LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE, Reason, Workspace};
use kube::Client;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::{NodeProvisioner, ProvisionError, ProvisionReport};
use crate::azure::{Arm, AzureSettings, http_failure};
use crate::naming::{self, LABEL_WORKSPACE_UID};
use crate::ownership::{self, Mark, Marked};
use crate::plan::WorkspacePlan;

/// The api-version `azure_mgmt_containerservice` 0.10 uses by default.
pub const API_VERSION: &str = "2023-01-02-preview";

/// The agent pool body for `ws`: vmSize = instanceType, count, node labels = workspace
/// labels + the user's matchLabels, taint `sku=gpu:NoSchedule` (not on a CPU-only size, whose
/// serving pod carries no GPU toleration), OS disk from the preset, mode User, tagged with the
/// workspace.
pub fn agent_pool_body(ws: &Workspace, plan: &WorkspacePlan) -> Value {
    let mut labels = ws.match_labels();
    labels.extend(naming::workspace_labels(ws));
    let disk = plan
        .preset
        .as_ref()
        .map(|p| p.disk.as_gib().ceil() as u64)
        .unwrap_or(0)
        .max(128);
    let taints: Vec<&str> = if plan.cpu_only() {
        Vec::new()
    } else {
        vec!["sku=gpu:NoSchedule"]
    };
    json!({
        "properties": {
            "count": plan.node_count,
            "vmSize": plan.instance_type,
            "osType": "Linux",
            "osDiskSizeGB": disk,
            "mode": "User",
            "type": "VirtualMachineScaleSets",
            "nodeLabels": labels,
            "nodeTaints": taints,
            "tags": {
                LABEL_WORKSPACE: naming::name(ws),
                LABEL_WORKSPACE_NAMESPACE: naming::namespace(ws),
                LABEL_WORKSPACE_UID: naming::uid(ws),
            },
        }
    })
}

/// Maps an ARM error (HTTP status and body `{"error": {"code", "message"}}`) to a condition
/// reason and message.
pub fn classify_error(status: u16, body: &str) -> (Reason, String) {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let err = if v["error"].is_object() {
        &v["error"]
    } else {
        &v
    };
    let code = err["code"].as_str().unwrap_or("");
    let message = err["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| body.trim().to_string());
    classify(status, code, &message)
}

/// Maps an ARM error code and message to a condition reason and message.
pub fn classify(status: u16, code: &str, message: &str) -> (Reason, String) {
    let lower = format!("{code} {message}").to_ascii_lowercase();
    let r = if lower.contains("quota") {
        Reason::QuotaExceeded
    } else if lower.contains("skunotavailable")
        || lower.contains("sku not available")
        || lower.contains("not available in location")
    {
        Reason::SkuNotAvailable
    } else {
        Reason::CloudError
    };
    let code = if code.is_empty() {
        format!("HTTP {status}")
    } else {
        code.to_string()
    };
    (
        r,
        format!("Azure refused the agent pool ({code}): {message}"),
    )
}

/// An ARM failure as a [`ProvisionError`], with ARM's status, code and message when it
/// answered (e.g. `HTTP 401 AuthenticationFailed: ...` once the credentials are gone).
fn arm_failure(e: azure_core::Error) -> ProvisionError {
    ProvisionError::Azure(match http_failure(&e) {
        Some((status, code, message)) => format!(
            "Azure Resource Manager answered HTTP {status} {}: {}",
            code.as_deref().unwrap_or("(no code)"),
            message.as_deref().unwrap_or("(no message)")
        ),
        None => e.to_string(),
    })
}

/// Whether an ARM status is worth retrying (throttling, timeouts, server errors).
fn transient(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// One AKS agent pool per workspace, through `azure_mgmt_containerservice`.
#[derive(Clone)]
pub struct Aks {
    arm: Arm,
    settings: AzureSettings,
    /// `Azure-AsyncOperation` URLs of the PUTs this process sent, by pool name.
    operations: Arc<Mutex<HashMap<String, String>>>,
}

/// The workspace tags of a pool.
pub fn pool_mark(p: &AgentPool) -> Mark {
    let tags = p.properties.as_ref().and_then(|p| p.tags.as_ref());
    let tag = |k: &str| tags.and_then(|t| t[k].as_str()).map(str::to_string);
    Mark {
        name: p.sub_resource.name.clone().unwrap_or_default(),
        namespace: tag(LABEL_WORKSPACE_NAMESPACE),
        workspace: tag(LABEL_WORKSPACE),
        uid: tag(LABEL_WORKSPACE_UID),
    }
}

/// Provisioning state of a pool that is still changing.
fn in_progress(state: &str) -> bool {
    !matches!(state, "Succeeded" | "Failed" | "Canceled")
}

impl Aks {
    /// A provisioner talking to ARM with `settings`.
    pub fn new(settings: AzureSettings) -> Result<Self, crate::azure::AzureSetupError> {
        Ok(Self {
            arm: crate::azure::agent_pools_client(&settings)?,
            settings,
            operations: Arc::default(),
        })
    }

    fn azure_error(&self, e: azure_core::Error) -> Result<ProvisionReport, ProvisionError> {
        match http_failure(&e) {
            Some((status, code, message)) if !transient(status) => {
                let (r, m) = classify(
                    status,
                    code.as_deref().unwrap_or(""),
                    message.as_deref().unwrap_or("no message"),
                );
                Ok(ProvisionReport {
                    failure: Some((r, m)),
                    progress: None,
                    // The cause is outside the spec (quota, region): look again later.
                    requeue_after: Some(Duration::from_secs(15)),
                })
            }
            _ => Err(ProvisionError::Azure(e.to_string())),
        }
    }

    fn forget_operation(&self, pool: &str) {
        if let Ok(mut ops) = self.operations.lock() {
            ops.remove(pool);
        }
    }

    /// Pools whose last PUT's operation URL is still kept (for the error of a Failed pool).
    pub fn tracked_operations(&self) -> usize {
        self.operations.lock().map(|o| o.len()).unwrap_or(0)
    }

    /// The pool, or None when ARM answers 404.
    pub async fn get(&self, pool: &str) -> Result<Option<AgentPool>, azure_core::Error> {
        let s = &self.settings;
        match self
            .arm
            .pools()
            .get(&s.subscription_id, &s.resource_group, &s.cluster_name, pool)
            .await
        {
            Ok(p) => Ok(Some(p)),
            Err(e) if http_failure(&e).is_some_and(|(st, ..)| st == 404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn put(&self, pool: &str, body: &Value) -> Result<(), azure_core::Error> {
        let s = &self.settings;
        let model: AgentPool = serde_json::from_value(body.clone())?;
        let rsp = self
            .arm
            .pools()
            .create_or_update(
                &s.subscription_id,
                &s.resource_group,
                &s.cluster_name,
                pool,
                model,
            )
            .send()
            .await?;
        let raw = rsp.into_raw_response();
        if let Some(url) =
            raw.headers()
                .get_optional_str(&azure_core::headers::HeaderName::from_static(
                    "azure-asyncoperation",
                ))
            && let Ok(mut ops) = self.operations.lock()
        {
            ops.insert(pool.to_owned(), url.to_owned());
        }
        Ok(())
    }

    /// Every pool of the cluster.
    pub async fn list(&self) -> Result<Vec<AgentPool>, azure_core::Error> {
        let s = &self.settings;
        let mut stream = self
            .arm
            .pools()
            .list(&s.subscription_id, &s.resource_group, &s.cluster_name)
            .into_stream();
        let mut out = Vec::new();
        while let Some(page) = stream.next().await {
            out.extend(page?.value);
        }
        Ok(out)
    }

    /// Starts deleting `pool`; true once it is gone.
    pub async fn delete(&self, pool: &str) -> Result<bool, azure_core::Error> {
        let s = &self.settings;
        match self.get(pool).await? {
            None => return Ok(true),
            Some(p) => {
                let state = p
                    .properties
                    .as_ref()
                    .and_then(|p| p.provisioning_state.as_deref())
                    .unwrap_or("");
                if state == "Deleting" {
                    return Ok(false);
                }
            }
        }
        match self
            .arm
            .pools()
            .delete(&s.subscription_id, &s.resource_group, &s.cluster_name, pool)
            .send()
            .await
        {
            Ok(_) => Ok(false),
            Err(e) if http_failure(&e).is_some_and(|(st, ..)| st == 404) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Why a Failed pool failed, from the operation this process started, if any.
    async fn failure_of(&self, pool: &str) -> (Reason, String) {
        let url = self
            .operations
            .lock()
            .ok()
            .and_then(|ops| ops.get(pool).cloned());
        if let Some(url) = url
            && let Ok((_, Some(code), message)) = self.arm.operation(&url).await
        {
            let (r, m) = classify(200, &code, message.as_deref().unwrap_or("no message"));
            return (r, m);
        }
        (
            Reason::CloudError,
            format!("Azure reports agent pool {pool} in provisioningState Failed"),
        )
    }

    /// Deletes pools tagged with a workspace that no longer exists (or was recreated: another
    /// UID); returns their names. A workspace that cannot be looked up is skipped.
    pub async fn delete_orphans(&self, client: &Client) -> Result<Vec<String>, ProvisionError> {
        let pools = self.list().await.map_err(arm_failure)?;
        let mut deleted = Vec::new();
        for p in &pools {
            let mark = pool_mark(p);
            if !ownership::orphaned(client, &mark, Marked::AgentPool).await {
                continue;
            }
            self.delete(&mark.name).await.map_err(arm_failure)?;
            deleted.push(mark.name);
        }
        Ok(deleted)
    }

    /// The `az` command that deletes `pool` of this cluster.
    fn delete_command(&self, pool: &str) -> String {
        let s = &self.settings;
        format!(
            "`az aks nodepool delete --subscription {} --resource-group {} --cluster-name {} --name {pool}`",
            s.subscription_id, s.resource_group, s.cluster_name
        )
    }

    /// Looks for orphaned pools every `orphan_interval`, forever.
    pub fn spawn_orphan_sweeper(&self, client: Client) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(me.settings.orphan_interval).await;
                if let Err(e) = me.delete_orphans(&client).await {
                    warn!(error = %e, "sweeping orphaned agent pools");
                }
            }
        });
    }
}

impl NodeProvisioner for Aks {
    async fn ensure(
        &self,
        ws: &Workspace,
        plan: &WorkspacePlan,
    ) -> Result<ProvisionReport, ProvisionError> {
        let pool = naming::pool_name(naming::namespace(ws), naming::name(ws));
        let body = agent_pool_body(ws, plan);
        let existing = match self.get(&pool).await {
            Ok(p) => p,
            Err(e) => return self.azure_error(e),
        };
        let Some(existing) = existing else {
            info!(%pool, vm_size = %plan.instance_type, count = plan.node_count, "creating agent pool");
            if let Err(e) = self.put(&pool, &body).await {
                return self.azure_error(e);
            }
            return Ok(ProvisionReport {
                failure: None,
                progress: Some(format!(
                    "creating AKS agent pool {pool} ({} x {})",
                    plan.node_count, plan.instance_type
                )),
                requeue_after: Some(Duration::from_secs(2)),
            });
        };
        // A pool of this name without this workspace's UID is someone else's: never PUT it.
        if let Err(why) = ownership::marked_for(pool_mark(&existing).uid.as_deref(), ws) {
            return Ok(ProvisionReport {
                failure: Some((
                    Reason::ChildNameTaken,
                    format!(
                        "AKS agent pool {pool} already exists and was not created for this \
                         workspace: {why}; the controller leaves it untouched: if it is left over \
                         from a deleted workspace, delete it ({}; the orphan sweeper also does \
                         within {} s), or recreate this workspace under another name",
                        self.delete_command(&pool),
                        self.settings.orphan_interval.as_secs()
                    ),
                )),
                progress: None,
                requeue_after: Some(Duration::from_secs(60)),
            });
        }
        let props = existing.properties.unwrap_or_default();
        let state = props.provisioning_state.unwrap_or_default();
        if in_progress(&state) {
            return Ok(ProvisionReport {
                failure: None,
                progress: Some(format!("AKS agent pool {pool} is {state}")),
                requeue_after: Some(Duration::from_secs(2)),
            });
        }
        if state == "Failed" {
            let (r, m) = self.failure_of(&pool).await;
            // Retry the PUT: a failed pool can be re-put once the cause is gone.
            if let Err(e) = self.put(&pool, &body).await {
                return self.azure_error(e);
            }
            return Ok(ProvisionReport {
                failure: Some((r, m)),
                progress: None,
                requeue_after: Some(Duration::from_secs(5)),
            });
        }
        if props.count != Some(plan.node_count) {
            info!(%pool, count = plan.node_count, "scaling agent pool");
            if let Err(e) = self.put(&pool, &body).await {
                return self.azure_error(e);
            }
            return Ok(ProvisionReport {
                failure: None,
                progress: Some(format!(
                    "scaling AKS agent pool {pool} to {}",
                    plan.node_count
                )),
                requeue_after: Some(Duration::from_secs(2)),
            });
        }
        // The last PUT succeeded: its operation is no longer needed.
        self.forget_operation(&pool);
        Ok(ProvisionReport {
            failure: None,
            progress: Some(format!(
                "AKS agent pool {pool} is Succeeded; waiting for its nodes to be Ready"
            )),
            requeue_after: None,
        })
    }

    async fn release(&self, ws: &Workspace) -> Result<bool, ProvisionError> {
        let pool = naming::pool_name(naming::namespace(ws), naming::name(ws));
        match self.get(&pool).await.map_err(arm_failure)? {
            None => {
                self.forget_operation(&pool);
                Ok(true)
            }
            Some(p) => {
                if let Err(why) = ownership::marked_for(pool_mark(&p).uid.as_deref(), ws) {
                    warn!(%pool, %why, "leaving an agent pool that is not this workspace's");
                    return Ok(true);
                }
                let gone = self.delete(&pool).await.map_err(arm_failure)?;
                if gone {
                    self.forget_operation(&pool);
                }
                Ok(gone)
            }
        }
    }

    fn cleanup_hint(&self, ws: &Workspace) -> String {
        let pool = naming::pool_name(naming::namespace(ws), naming::name(ws));
        format!(
            "its AKS agent pool {pool}: {} (if it still exists and is tagged {LABEL_WORKSPACE_UID}={})",
            self.delete_command(&pool),
            naming::uid(ws)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cloud;
    use crate::plan::plan;
    use crate::testutil::ws;

    #[test]
    fn a_cpu_only_pool_has_no_gpu_taint() {
        let w = ws(
            "metadata: {name: w, namespace: n}\nresource: {instanceType: Standard_D4s_v3, labelSelector: {matchLabels: {apps: x}}}\ninference: {preset: {name: smollm2-135m-instruct}}",
        );
        let p = plan(&w, Cloud::Azure, None).expect("plan");
        let b = agent_pool_body(&w, &p);
        assert_eq!(b["properties"]["vmSize"], "Standard_D4s_v3");
        assert_eq!(b["properties"]["nodeTaints"], json!([]));
    }

    #[test]
    fn pool_body_follows_the_contract() {
        let w = ws(include_str!(
            "../../../examples/inference/kaito_workspace_phi_3.yaml"
        ));
        let p = plan(&w, Cloud::Azure, None).expect("plan");
        let b = agent_pool_body(&w, &p);
        let props = &b["properties"];
        assert_eq!(props["vmSize"], "Standard_NC6s_v3");
        assert_eq!(props["count"], 1);
        assert_eq!(props["mode"], "User");
        assert_eq!(props["nodeTaints"], json!(["sku=gpu:NoSchedule"]));
        assert_eq!(props["nodeLabels"]["apps"], "phi-3");
        assert_eq!(
            props["nodeLabels"]["kaito.sh/workspace"],
            "workspace-phi-3-mini"
        );
        assert_eq!(props["tags"]["kaito.sh/workspacenamespace"], "default");
        assert_eq!(props["tags"]["kaito.sh/workspaceuid"], "uid-1");
        assert!(props["osDiskSizeGB"].as_u64().is_some_and(|d| d >= 128));
        // The body survives the crate's model: nothing the contract needs is dropped.
        let model: AgentPool = serde_json::from_value(b.clone()).expect("model");
        let back = serde_json::to_value(&model).expect("json");
        assert_eq!(back["properties"]["nodeTaints"], props["nodeTaints"]);
        assert_eq!(back["properties"]["tags"], props["tags"]);
        assert_eq!(back["properties"]["nodeLabels"], props["nodeLabels"]);
        assert_eq!(back["properties"]["mode"], "User");
    }

    #[test]
    fn arm_errors_become_reasons() {
        let table = [
            (
                409,
                r#"{"error":{"code":"QuotaExceeded","message":"Operation could not be completed as it results in exceeding approved standardNCSv3Family Cores quota."}}"#,
                "QuotaExceeded",
                "exceeding approved",
            ),
            (
                400,
                r#"{"error":{"code":"SkuNotAvailable","message":"The requested VM size Standard_NC6s_v3 is not available in location westus."}}"#,
                "SKUNotAvailable",
                "Standard_NC6s_v3",
            ),
            (
                500,
                r#"{"error":{"code":"InternalServerError","message":"boom"}}"#,
                "CloudError",
                "InternalServerError",
            ),
            (502, "bad gateway", "CloudError", "HTTP 502"),
        ];
        for (status, body, want, text) in table {
            let (r, m) = classify_error(status, body);
            assert_eq!(r.as_str(), want, "{body}");
            assert!(m.contains(text), "{m}");
        }
    }
}
