//! The AKS agent-pool provisioner's pure parts: the agent pool body the controller PUTs and
//! the classification of Azure Resource Manager errors into condition reasons.
//!
//! `azure_mgmt_containerservice` 0.10 (default feature `package-preview-2023-01`) sends
//! `api-version=2023-01-02-preview` to
//! `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{cluster}/agentPools/{pool}`.

use kaito_api::{LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE, Workspace, reason};
use serde_json::{Value, json};

use crate::naming;
use crate::plan::WorkspacePlan;

/// The api-version `azure_mgmt_containerservice` 0.10 uses by default.
pub const API_VERSION: &str = "2023-01-02-preview";

/// The agent pool body for `ws`: vmSize = instanceType, count, node labels = workspace
/// labels + the user's matchLabels, taint `sku=gpu:NoSchedule`, OS disk from the preset,
/// mode User, tagged with the workspace.
pub fn agent_pool_body(ws: &Workspace, plan: &WorkspacePlan) -> Value {
    let mut labels = ws.match_labels();
    labels.extend(naming::workspace_labels(ws));
    let disk = plan
        .preset
        .map(|p| p.disk.as_gib().ceil() as u64)
        .unwrap_or(0)
        .max(128);
    json!({
        "properties": {
            "count": plan.node_count,
            "vmSize": plan.instance_type,
            "osType": "Linux",
            "osDiskSizeGB": disk,
            "mode": "User",
            "type": "VirtualMachineScaleSets",
            "nodeLabels": labels,
            "nodeTaints": ["sku=gpu:NoSchedule"],
            "tags": {
                LABEL_WORKSPACE: naming::name(ws),
                LABEL_WORKSPACE_NAMESPACE: naming::namespace(ws),
            },
        }
    })
}

/// Maps an ARM error (HTTP status and body `{"error": {"code", "message"}}`) to a condition
/// reason and message.
pub fn classify_error(status: u16, body: &str) -> (&'static str, String) {
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
    let lower = format!("{code} {message}").to_ascii_lowercase();
    let r = if lower.contains("quota") {
        reason::QUOTA_EXCEEDED
    } else if lower.contains("skunotavailable")
        || lower.contains("sku not available")
        || lower.contains("not available in location")
    {
        reason::SKU_NOT_AVAILABLE
    } else {
        reason::CLOUD_ERROR
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan;
    use crate::testutil::ws;

    #[test]
    fn pool_body_follows_the_contract() {
        let w = ws(include_str!("../../examples/inference-phi-3.yaml"));
        let p = plan(&w, None).expect("plan");
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
        assert!(props["osDiskSizeGB"].as_u64().is_some_and(|d| d >= 128));
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
            assert_eq!(r, want, "{body}");
            assert!(m.contains(text), "{m}");
        }
    }
}
