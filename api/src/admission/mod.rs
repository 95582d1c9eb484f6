//! Admission: the defaults and rules a Workspace must satisfy and the plan it runs with, as
//! pure functions. One entry point, [`admit`], in three stages any caller may also run alone:
//!
//! - [`apply_defaults`] (`defaults.rs`): what can be computed is filled in; the mutating
//!   webhook runs this stage;
//! - [`validate`] (`validate.rs`): every rule, all errors together, plus warnings; the
//!   validating webhook runs this stage on the object as it will be stored;
//! - [`plan()`] (`plan.rs`): what the workspace runs, on which node shape, with which
//!   sizing; the controller runs this stage on each stored (already admitted) workspace.
//!
//! `kubectl kaito create --dry-run=client` runs all three through [`admit`]. Nothing here
//! does I/O, so the webhook, the controller and the plugin cannot disagree.

mod defaults;
mod hub_model;
mod inference_config;
mod plan;
mod policy;
mod tuning_config;
mod urls;
mod validate;

use std::fmt;

/// Whose SKU table applies: the one type the webhook, the controller and the plugin share.
pub use kaito_presets::Cloud;
/// How GPU nodes come to exist: the one type the webhook, the controller and the plugin share.
pub use kaito_presets::Provisioner;
use kaito_presets::{PresetCatalog, SkuCatalog};

use crate::constants::ANNOTATION_BYPASS_RESOURCE_CHECKS;
use crate::types::Workspace;

pub use defaults::{apply_defaults, sizing_mode};

pub use hub_model::{
    ANNOTATION_MODEL_FACTS, ANNOTATION_MODEL_REVISION, hub_model_name, hub_preset,
    record_hub_model, workspace_preset,
};
pub use inference_config::{
    ENGINE_SECTION, EngineParams, INFERENCE_CONFIG_KEY, InferenceConfig, parse_inference_config,
    parse_inference_config_map,
};
pub use plan::{PlanError, WorkloadKind, WorkspacePlan, plan, sku_shape};
pub use policy::{DEFAULT_MAX_NODES_PER_WORKSPACE, PodPolicy};
pub use tuning_config::{
    DATA_DIR, RESULTS_DIR, TRAINING_CONFIG_KEY, TRAINING_CONFIG_ROOT, TRAINING_CONFIG_SECTIONS,
    validate_training_config, validate_training_config_map,
};
pub use urls::{UrlPolicy, check_download_url};
pub use validate::validate;

/// Most adapters one workspace may serve.
pub const MAX_ADAPTERS: usize = 10;
/// Label the webhook puts in a defaulted `resource.labelSelector`.
pub const DEFAULT_SELECTOR_LABEL: &str = "apps";

/// What admission needs to know about the installation.
#[derive(Clone, Debug)]
pub struct AdmissionConfig {
    /// Whose SKU table applies.
    pub cloud: Cloud,
    /// How nodes are provisioned.
    pub provisioner: Provisioner,
    /// The model presets.
    pub presets: PresetCatalog,
    /// The VM sizes (GPU and CPU-only).
    pub skus: SkuCatalog,
    /// Which download URLs tuning input may name.
    pub url_policy: UrlPolicy,
    /// How many nodes a workspace may ask for and what its pods may do on them.
    pub pod_policy: PodPolicy,
}

impl AdmissionConfig {
    /// The built-in catalogs for `cloud` and `provisioner`.
    pub fn new(cloud: Cloud, provisioner: Provisioner) -> Self {
        Self {
            cloud,
            provisioner,
            presets: PresetCatalog::builtin().clone(),
            skus: SkuCatalog::builtin().clone(),
            url_policy: UrlPolicy::PublicOnly,
            pod_policy: PodPolicy::default(),
        }
    }
}

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `inference.adapters[1].strength`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The outcome of validation: every error (not only the first) and warnings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Reasons to reject the object.
    pub errors: Vec<FieldError>,
    /// Things the user should know; they do not reject.
    pub warnings: Vec<String>,
}

impl Verdict {
    /// True when there is no error.
    pub fn is_allowed(&self) -> bool {
        self.errors.is_empty()
    }

    /// All errors, one per line.
    pub fn message(&self) -> String {
        self.errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// A GPU-fit problem: an error, or a warning when the user bypassed resource checks.
    fn resource_problem(&mut self, bypass: bool, field: &str, message: String) {
        if bypass {
            self.warnings.push(format!(
                "{field}: {message} (accepted because {ANNOTATION_BYPASS_RESOURCE_CHECKS} is set)"
            ));
        } else {
            self.error(field, message);
        }
    }
}

/// Whether the user set `kaito.sh/bypass-resource-checks: "true"`: a size the sizing says is
/// too small is then admitted with a warning, and planned as asked.
pub fn bypasses_resource_checks(ws: &Workspace) -> bool {
    ws.annotation(ANNOTATION_BYPASS_RESOURCE_CHECKS)
        .is_some_and(|a| a.eq_ignore_ascii_case("true"))
}

/// What admission makes of a workspace: its defaulted form, the verdict on that form, and its
/// plan.
#[derive(Clone, Debug)]
pub struct Admission {
    /// The workspace with its defaults filled in ([`apply_defaults`]).
    pub workspace: Workspace,
    /// Errors and warnings about the defaulted workspace ([`validate`]).
    pub verdict: Verdict,
    /// What the defaulted workspace runs ([`plan()`]); an error says why it cannot be
    /// planned yet (e.g. bring-your-own nodes without `resource.instanceType`: the shape then
    /// comes from the nodes).
    pub plan: Result<WorkspacePlan, PlanError>,
}

/// The one planning entry point: defaults `ws`, judges it (`old` is the stored object on an
/// update) and plans it, all with the installation's settings `cfg` (cloud, provisioner,
/// catalogs, policies).
pub fn admit(old: Option<&Workspace>, ws: &Workspace, cfg: &AdmissionConfig) -> Admission {
    let mut workspace = ws.clone();
    apply_defaults(&mut workspace, cfg);
    let verdict = validate(old, &workspace, cfg);
    let plan = plan(&workspace, cfg, None);
    Admission {
        workspace,
        verdict,
        plan,
    }
}

#[cfg(test)]
mod tests;
