//! The Workspace CustomResourceDefinition, generated from the Rust types.
//!
//! `cargo run -p kaito-api --bin crdgen` writes it to `charts/kaito/crds/`; a test fails
//! when the committed copy differs from what the types generate.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceSubresourceStatus,
    CustomResourceSubresources, CustomResourceValidation, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::generate::SchemaSettings;
use schemars::transform::AddNullable;

use crate::constants::{
    CONDITION_INFERENCE_READY, CONDITION_JOB_STARTED, CONDITION_RESOURCE_READY,
    CONDITION_WORKSPACE_SUCCEEDED, GROUP, KIND, PLURAL, V1ALPHA1, V1BETA1,
};
use crate::types::Workspace;

/// Path of the generated CRD inside the repository.
pub const CRD_PATH: &str = "charts/kaito/crds/kaito.sh_workspaces.yaml";

/// The OpenAPI v3 schema of a Workspace, in the structural form the apiserver requires.
pub fn workspace_schema() -> JSONSchemaProps {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .with_transform(kube::core::schema::OptionalEnum)
        .with_transform(kube::core::schema::OptionalIntOrString)
        .into_generator();
    let mut schema = serde_json::to_value(generator.into_root_schema_for::<Workspace>())
        .expect("a schemars schema is JSON");
    if let Some(root) = schema.as_object_mut() {
        // The apiserver owns metadata's schema, and apiVersion/kind/metadata are always set.
        root.remove("required");
        root.remove("title");
        if let Some(props) = root.get_mut("properties").and_then(|p| p.as_object_mut()) {
            props.insert("metadata".into(), serde_json::json!({ "type": "object" }));
            for field in ["apiVersion", "kind"] {
                if let Some(p) = props.get_mut(field).and_then(|p| p.as_object_mut()) {
                    p.remove("default");
                }
            }
        }
    }
    serde_json::from_value(schema).expect("the generated schema is a JSONSchemaProps")
}

fn column(
    name: &str,
    type_: &str,
    json_path: &str,
    description: &str,
) -> CustomResourceColumnDefinition {
    CustomResourceColumnDefinition {
        name: name.into(),
        type_: type_.into(),
        json_path: json_path.into(),
        description: Some(description.into()),
        ..Default::default()
    }
}

fn condition_column(name: &str, condition: &str) -> CustomResourceColumnDefinition {
    column(
        name,
        "string",
        &format!(".status.conditions[?(@.type==\"{condition}\")].status"),
        &format!("Status of the {condition} condition"),
    )
}

/// The printer columns `kubectl get workspace` shows.
pub fn printer_columns() -> Vec<CustomResourceColumnDefinition> {
    vec![
        column(
            "Instance",
            "string",
            ".resource.instanceType",
            "GPU VM size of the nodes",
        ),
        condition_column("ResourceReady", CONDITION_RESOURCE_READY),
        condition_column("InferenceReady", CONDITION_INFERENCE_READY),
        condition_column("JobStarted", CONDITION_JOB_STARTED),
        condition_column("WorkspaceReady", CONDITION_WORKSPACE_SUCCEEDED),
        column(
            "Age",
            "date",
            ".metadata.creationTimestamp",
            "Time since creation",
        ),
    ]
}

/// The Workspace CRD: `v1alpha1` (served) and `v1beta1` (served, storage), same schema.
pub fn workspace_crd() -> CustomResourceDefinition {
    let schema = workspace_schema();
    let version = |name: &str, storage: bool| CustomResourceDefinitionVersion {
        name: name.into(),
        served: true,
        storage,
        schema: Some(CustomResourceValidation {
            open_api_v3_schema: Some(schema.clone()),
        }),
        subresources: Some(CustomResourceSubresources {
            status: Some(CustomResourceSubresourceStatus(serde_json::json!({}))),
            scale: None,
        }),
        additional_printer_columns: Some(printer_columns()),
        ..Default::default()
    };
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(format!("{PLURAL}.{GROUP}")),
            ..Default::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: GROUP.into(),
            names: CustomResourceDefinitionNames {
                kind: KIND.into(),
                list_kind: Some(format!("{KIND}List")),
                plural: PLURAL.into(),
                singular: Some("workspace".into()),
                short_names: Some(vec!["wk".into(), "wks".into()]),
                categories: Some(vec!["kaito".into()]),
            },
            scope: "Namespaced".into(),
            versions: vec![version(V1ALPHA1, false), version(V1BETA1, true)],
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The CRD as the YAML file committed under `charts/`.
pub fn workspace_crd_yaml() -> String {
    let body = serde_yaml::to_string(&workspace_crd()).expect("a CRD serialises to YAML");
    format!(
        "# Generated by `cargo run -p kaito-api --bin crdgen` from api/src/types.rs. Do not edit.\n{body}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crd_matches_the_types() {
        let committed = include_str!("../../charts/kaito/crds/kaito.sh_workspaces.yaml");
        assert!(
            committed == workspace_crd_yaml(),
            "charts/kaito/crds/kaito.sh_workspaces.yaml is stale: run `cargo run -p kaito-api --bin crdgen`"
        );
    }

    #[test]
    fn spec_fields_are_top_level_and_metadata_is_left_to_the_apiserver() {
        let schema = workspace_schema();
        let props = schema.properties.expect("properties");
        for field in ["resource", "inference", "tuning", "status", "metadata"] {
            assert!(props.contains_key(field), "{field}");
        }
        assert!(!props.contains_key("spec"));
        assert_eq!(props["metadata"].properties, None);
    }

    #[test]
    fn both_versions_served_and_v1beta1_stored() {
        let crd = workspace_crd();
        let versions: Vec<_> = crd
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.served, v.storage))
            .collect();
        assert_eq!(
            versions,
            [("v1alpha1", true, false), ("v1beta1", true, true)]
        );
        assert_eq!(
            crd.spec.names.short_names,
            Some(vec!["wk".to_string(), "wks".to_string()])
        );
    }

    #[test]
    fn printer_columns_are_the_seed_documents_columns() {
        let names: Vec<_> = printer_columns().into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "Instance",
                "ResourceReady",
                "InferenceReady",
                "JobStarted",
                "WorkspaceReady",
                "Age"
            ]
        );
    }

    #[test]
    fn free_form_fields_keep_unknown_fields() {
        let text = workspace_crd_yaml();
        assert!(
            text.matches("x-kubernetes-preserve-unknown-fields: true")
                .count()
                >= 3,
            "template and volumeSources"
        );
    }
}
