//! The Workspace resource. Unlike most CRDs, its spec fields sit at the top level of the
//! object next to `metadata` (`resource`, `inference`, `tuning`), as upstream KAITO defines
//! them. `v1alpha1` and `v1beta1` have the same shape, so one Rust type serves both; its
//! `apiVersion` field keeps the version the object was written in.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, ObjectMeta};
use kube::core::NamespaceResourceScope;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::constants::{GROUP, KIND, PLURAL, V1BETA1};

/// A model served or fine-tuned on GPU nodes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    title = "Workspace",
    description = "A model preset served or fine-tuned on GPU nodes."
)]
pub struct Workspace {
    /// `kaito.sh/v1alpha1` or `kaito.sh/v1beta1`.
    #[serde(default)]
    pub api_version: String,
    /// Always `Workspace`.
    #[serde(default)]
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The GPU nodes the workspace runs on.
    #[serde(default, skip_serializing_if = "ResourceSpec::is_empty")]
    pub resource: ResourceSpec,
    /// Serve a model (exactly one of `inference` and `tuning`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference: Option<InferenceSpec>,
    /// Fine-tune a model (exactly one of `inference` and `tuning`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<TuningSpec>,
    /// Observed state, written by the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<WorkspaceStatus>,
}

/// The GPU nodes of a workspace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSpec {
    /// Number of nodes (serving replicas). Defaulted by the webhook from sizing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i32>,
    /// GPU VM size, e.g. `Standard_NC6s_v3`. Defaulted to the smallest size that fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Labels the GPU nodes carry and the workload's pods select.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// Existing nodes to use first (bring-your-own nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_nodes: Option<Vec<String>>,
}

impl ResourceSpec {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Serving: a preset or a full pod template, with optional runtime config and adapters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InferenceSpec {
    /// The model preset to serve (exactly one of `preset` and `template`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<PresetSpec>,
    /// A full pod template to run instead of a preset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub template: Option<PodTemplateSpec>,
    /// Name of a ConfigMap holding `inference_config.yaml` (runtime parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// LoRA adapters applied on top of the preset (at most 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapters: Option<Vec<AdapterSpec>>,
}

/// A model preset and how to obtain it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PresetSpec {
    /// Preset name from the catalog, e.g. `phi-3-mini-4k-instruct`.
    pub name: String,
    /// `public` (default) or `private` (image from `presetOptions.image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_mode: Option<String>,
    /// Private images, pull secrets and the model-access secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset_options: Option<PresetOptions>,
}

/// Where a private preset comes from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PresetOptions {
    /// Image holding the model, for `accessMode: private`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Secrets to pull `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<String>>,
    /// Secret whose key `HF_TOKEN` authorises gated model downloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_access_secret: Option<String>,
}

/// A LoRA adapter served with the base model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdapterSpec {
    /// Where the adapter comes from (an image or a volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DataSource>,
    /// How strongly the adapter applies, `"0.0"` to `"1.0"` as a string. Default `"1.0"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strength: Option<String>,
}

/// Input data: exactly one of `urls`, `image` and `volumeSource`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataSource {
    /// Name of the data (adapters: the adapter's name, a DNS-1123 label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// http(s) URLs to download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// An OCI image holding the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A Kubernetes volume source holding the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub volume_source: Option<serde_json::Value>,
    /// Secrets to pull `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<String>>,
}

/// Fine-tuning: a preset, a method, input data and where the adapter goes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TuningSpec {
    /// The base model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<PresetSpec>,
    /// `lora` or `qlora`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Name of a ConfigMap holding `training_config.yaml`; absent: the built-in template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// The training data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<DataSource>,
    /// Where the trained adapter is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<DataDestination>,
}

/// Output: exactly one of `image` (with `imagePushSecret`) and `volumeSource`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataDestination {
    /// OCI image reference to push the adapter to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// docker-config Secret used to push `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_push_secret: Option<String>,
    /// A Kubernetes volume source to write the adapter to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub volume_source: Option<serde_json::Value>,
}

/// Observed state of a workspace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStatus {
    /// Names of the nodes the workspace runs on, sorted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_nodes: Option<Vec<String>>,
    /// `ResourceReady`, `InferenceReady` or `JobStarted`, and `WorkspaceSucceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// `Pending`, `Ready`, `NotReady`, `Running`, `Succeeded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Nodes the workspace needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_node_count: Option<i32>,
}

fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

impl kube::Resource for Workspace {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        V1BETA1.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl Workspace {
    /// An empty `kaito.sh/v1beta1` Workspace named `name` in `namespace`.
    pub fn new(name: &str, namespace: &str) -> Self {
        Self {
            api_version: format!("{GROUP}/{V1BETA1}"),
            kind: KIND.into(),
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            ..Self::default()
        }
    }

    /// The preset this workspace serves or tunes, if it names one.
    pub fn preset(&self) -> Option<&PresetSpec> {
        match (&self.inference, &self.tuning) {
            (Some(i), _) => i.preset.as_ref(),
            (None, Some(t)) => t.preset.as_ref(),
            (None, None) => None,
        }
    }

    /// The condition of type `type_`, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == type_)
    }

    /// An annotation's value, if set.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    /// `resource.labelSelector.matchLabels`, or an empty map.
    pub fn match_labels(&self) -> BTreeMap<String, String> {
        self.resource
            .label_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEEDS: [(&str, &str); 3] = [
        (
            "inference/kaito_workspace_phi_3.yaml",
            include_str!("../../examples/inference/kaito_workspace_phi_3.yaml"),
        ),
        (
            "inference/kaito_workspace_phi_3_with_adapters.yaml",
            include_str!("../../examples/inference/kaito_workspace_phi_3_with_adapters.yaml"),
        ),
        (
            "fine-tuning/kaito_workspace_tuning_phi_3.yaml",
            include_str!("../../examples/fine-tuning/kaito_workspace_tuning_phi_3.yaml"),
        ),
    ];

    #[test]
    fn every_seed_round_trips_without_loss() {
        for (file, text) in SEEDS {
            let original: serde_json::Value = serde_yaml::from_str(text).expect("seed is YAML");
            let ws: Workspace =
                serde_json::from_value(original.clone()).expect("seed fits the types");
            let back = serde_json::to_value(&ws).expect("serialises");
            assert_eq!(back, original, "{file} changed on a round trip");
        }
    }

    #[test]
    fn seed_fields_land_in_the_typed_places() {
        let ws: Workspace = serde_yaml::from_str(SEEDS[1].1).expect("seed");
        assert_eq!(ws.api_version, "kaito.sh/v1alpha1");
        assert_eq!(
            ws.resource.instance_type.as_deref(),
            Some("Standard_NC6s_v3")
        );
        assert_eq!(
            ws.match_labels().get("apps").map(String::as_str),
            Some("phi-3-adapter")
        );
        assert_eq!(
            ws.preset().map(|p| p.name.as_str()),
            Some("phi-3-mini-128k-instruct")
        );
        let adapter = &ws
            .inference
            .as_ref()
            .and_then(|i| i.adapters.clone())
            .expect("adapters")[0];
        assert_eq!(adapter.strength.as_deref(), Some("1.0"));
        assert_eq!(
            adapter.source.as_ref().and_then(|s| s.name.as_deref()),
            Some("phi-3-adapter")
        );

        let tuning: Workspace = serde_yaml::from_str(SEEDS[2].1).expect("seed");
        let t = tuning.tuning.as_ref().expect("tuning");
        assert_eq!(t.method.as_deref(), Some("qlora"));
        assert_eq!(
            t.input.as_ref().and_then(|i| i.urls.as_ref()).map(Vec::len),
            Some(1)
        );
        assert_eq!(
            t.output
                .as_ref()
                .and_then(|o| o.image_push_secret.as_deref()),
            Some("ACR_REGISTRY_SECRET_HERE")
        );
    }

    #[test]
    fn resource_identity_is_kaito_sh_v1beta1_workspaces() {
        use kube::Resource;
        assert_eq!(Workspace::api_version(&()), "kaito.sh/v1beta1");
        assert_eq!(Workspace::plural(&()), "workspaces");
        let ws = Workspace::new("w", "ns");
        assert_eq!(ws.api_version, "kaito.sh/v1beta1");
        assert_eq!(ws.metadata.namespace.as_deref(), Some("ns"));
    }
}
