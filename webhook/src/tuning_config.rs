//! The ConfigMap a workspace names in `tuning.config` or `inference.config`, fetched for
//! `/validate`.
//!
//! On CREATE of a `kaito.sh` Workspace whose `tuning.config` or `inference.config` names a
//! ConfigMap, the webhook reads that ConfigMap from the workspace's namespace with its own
//! Kubernetes client (RBAC: `get` on `configmaps`) before deciding; [`crate::review`] then
//! checks its `training_config.yaml` ([`kaito_api::admission::validate_training_config_map`])
//! or `inference_config.yaml` ([`kaito_api::admission::parse_inference_config_map`]) and denies
//! a missing ConfigMap. Updates are not checked again: an update must still go through
//! (finalizer removal) after the ConfigMap was deleted.
//!
//! The webhook has a client for this only when it authenticates its callers (`--client-ca-file`:
//! the API server's client certificate): the request names the namespace and the ConfigMap, so
//! an unauthenticated caller could otherwise make it read any ConfigMap. Without one nothing is
//! fetched and the workspace is admitted with a warning. Errors about a ConfigMap name its bad
//! sections and keys, never its content.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::review::Call;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

/// How long the webhook waits for the ConfigMap (the apiserver gives the whole call 10 s).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The ConfigMap one admission request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigRef {
    /// The workspace's namespace.
    pub namespace: String,
    /// `tuning.config`.
    pub name: String,
}

/// What the webhook found for `tuning.config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigLookup {
    /// The request names no ConfigMap to check.
    NotNeeded,
    /// Not fetched, for the given reason: admitted with a warning.
    Unchecked(String),
    /// The ConfigMap's `data` (`None`: it has none).
    Found(Option<BTreeMap<String, String>>),
    /// No such ConfigMap in the namespace.
    NotFound,
    /// Reading it failed (forbidden, timeout, apiserver error).
    Failed(String),
}

impl ConfigLookup {
    /// What a webhook without a Kubernetes client knows.
    pub fn no_client() -> Self {
        Self::Unchecked(
            "the webhook reads ConfigMaps only for callers it authenticates (--client-ca-file) \
             and with a Kubernetes client"
                .to_owned(),
        )
    }
}

/// The ConfigMap to read for an admission call: only a CREATE of a Workspace (no subresource)
/// whose `tuning.config` (or else `inference.config`) is a non-empty name. `None` for anything
/// else, including objects that do not decode (the review code reports those).
pub fn config_ref(call: &Call) -> Option<ConfigRef> {
    let (namespace, ws) = call.created()?;
    let name = [
        ws.tuning.as_ref().and_then(|t| t.config.as_ref()),
        ws.inference.as_ref().and_then(|i| i.config.as_ref()),
    ]
    .into_iter()
    .flatten()
    .find(|c| !c.is_empty())?;
    Some(ConfigRef {
        namespace: namespace.to_owned(),
        name: name.clone(),
    })
}

/// Reads the ConfigMap `call` needs, if any.
pub async fn lookup(client: Option<&kube::Client>, call: &Call) -> ConfigLookup {
    let Some(config) = config_ref(call) else {
        return ConfigLookup::NotNeeded;
    };
    let Some(client) = client else {
        return ConfigLookup::no_client();
    };
    fetch(client, &config).await
}

/// Reads one ConfigMap, within [`FETCH_TIMEOUT`].
pub async fn fetch(client: &kube::Client, config: &ConfigRef) -> ConfigLookup {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &config.namespace);
    match tokio::time::timeout(FETCH_TIMEOUT, api.get_opt(&config.name)).await {
        Ok(Ok(Some(cm))) => ConfigLookup::Found(cm.data),
        Ok(Ok(None)) => ConfigLookup::NotFound,
        Ok(Err(err)) => {
            tracing::warn!(
                namespace = %config.namespace,
                configmap = %config.name,
                error = %err,
                "cannot read the workspace's ConfigMap"
            );
            let hint = match &err {
                kube::Error::Api(status) if status.code == 403 => {
                    ": the webhook's ServiceAccount needs get on configmaps"
                }
                _ => "",
            };
            ConfigLookup::Failed(format!("{err}{hint}"))
        }
        Err(_) => ConfigLookup::Failed(format!(
            "the Kubernetes API did not answer within {} s",
            FETCH_TIMEOUT.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config_ref(body: &[u8]) -> Option<ConfigRef> {
        super::config_ref(&Call::parse(body).ok()?)
    }

    fn body(operation: &str, tuning: serde_json::Value) -> Vec<u8> {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "1", "operation": operation, "namespace": "ns", "name": "w",
                "resource": {"group": "kaito.sh", "version": "v1beta1", "resource": "workspaces"},
                "userInfo": {"username": "u"},
                "kind": {"group": "kaito.sh", "version": "v1beta1", "kind": "Workspace"},
                "object": {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
                           "metadata": {"name": "w"}, "tuning": tuning},
            }
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn only_a_create_naming_a_config_needs_the_config_map() {
        assert_eq!(
            config_ref(&body("CREATE", json!({"config": "cfg"}))),
            Some(ConfigRef {
                namespace: "ns".into(),
                name: "cfg".into()
            })
        );
        assert_eq!(config_ref(&body("UPDATE", json!({"config": "cfg"}))), None);
        assert_eq!(
            config_ref(&body("CREATE", json!({"method": "qlora"}))),
            None
        );
        assert_eq!(config_ref(&body("CREATE", json!({"config": ""}))), None);
        let mut inference: serde_json::Value =
            serde_json::from_slice(&body("CREATE", json!(null))).expect("json");
        inference["request"]["object"]["inference"] = json!({"config": "params"});
        assert_eq!(
            config_ref(inference.to_string().as_bytes()),
            Some(ConfigRef {
                namespace: "ns".into(),
                name: "params".into()
            })
        );
        assert_eq!(config_ref(b"not json"), None);
    }
}
