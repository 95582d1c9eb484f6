//! Test helpers: workspaces and objects from inline YAML.

use kaito_api::Workspace;
use serde::de::DeserializeOwned;

/// A workspace from YAML; namespace `default` when the YAML has none.
#[allow(clippy::expect_used)]
pub fn ws(yaml: &str) -> Workspace {
    let mut w: Workspace = serde_yaml::from_str(yaml).expect("workspace YAML");
    if w.metadata.namespace.is_none() {
        w.metadata.namespace = Some("default".into());
    }
    if w.metadata.uid.is_none() {
        w.metadata.uid = Some("uid-1".into());
    }
    w
}

/// Any object from YAML.
#[allow(clippy::expect_used)]
pub fn obj<T: DeserializeOwned>(yaml: &str) -> T {
    serde_yaml::from_str(yaml).expect("object YAML")
}
