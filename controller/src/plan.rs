//! Plan: the pure step between fetching and building. The controller plans each workspace
//! with the admission code's planning stage (`kaito_api::admission::plan`) and the settings
//! the webhook admits with (`--cloud`, `--provisioner`, `--preset-catalog`, `--sku-catalog`),
//! so the controller and the webhook size a workspace identically.

use std::sync::OnceLock;

use kaito_api::Workspace;
use kaito_api::admission::{self, AdmissionConfig, Provisioner};
pub use kaito_api::admission::{PlanError, WorkloadKind, WorkspacePlan};
use kaito_presets::{Cloud, GpuShape};

/// The settings this process was started with (`--cloud`, `--provisioner`, `--preset-catalog`,
/// `--sku-catalog`: the webhook's settings), set once by [`use_settings`]; unset: the built-in
/// catalogs.
static CONFIGURED: OnceLock<AdmissionConfig> = OnceLock::new();

/// Makes the controller plan `cloud`'s workspaces, provisioned by `provisioner`, with these
/// catalogs (`None`: the built-in one) for the rest of the process, as the webhook does with
/// the same settings. Call once, at start; a second call is an error.
pub fn use_settings(
    cloud: Cloud,
    provisioner: Provisioner,
    presets: Option<kaito_presets::PresetCatalog>,
    skus: Option<kaito_presets::SkuCatalog>,
) -> Result<(), &'static str> {
    let mut config = AdmissionConfig::new(cloud, provisioner);
    if let Some(p) = presets {
        config.presets = p;
    }
    if let Some(s) = skus {
        config.skus = s;
    }
    CONFIGURED
        .set(config)
        .map_err(|_| "the settings were already chosen")
}

/// The admission settings the controller plans with: those of [`use_settings`], else the
/// built-in presets and SKU table for `cloud` (`--cloud`/KAITO_CLOUD, the setting the webhook
/// reads), so the controller accepts exactly the sizes the webhook admitted.
pub fn admission_config(cloud: Cloud) -> &'static AdmissionConfig {
    if let Some(c) = CONFIGURED.get().filter(|c| c.cloud == cloud) {
        return c;
    }
    static AZURE: OnceLock<AdmissionConfig> = OnceLock::new();
    static AWS: OnceLock<AdmissionConfig> = OnceLock::new();
    let cell = match cloud {
        Cloud::Azure => &AZURE,
        Cloud::Aws => &AWS,
    };
    // Planning does not depend on the provisioner; only defaulting does.
    cell.get_or_init(|| AdmissionConfig::new(cloud, Provisioner::Byo))
}

/// The GPU shape of a catalog size of `cloud`.
pub fn sku_shape(cloud: Cloud, instance_type: &str) -> Option<GpuShape> {
    admission::sku_shape(admission_config(cloud), instance_type)
}

/// Whether `ws` asks for a CPU-only size of `cloud` (`resource.instanceType` names one in the
/// SKU catalog): its nodes then need no GPU to be ready, and provisioned ones get no GPU taint.
/// Known before planning, so the node census can use it.
pub fn cpu_only_size(ws: &Workspace, cloud: Cloud) -> bool {
    ws.resource
        .instance_type
        .as_deref()
        .and_then(|t| sku_shape(cloud, t))
        .is_some_and(|s| s.is_cpu_only())
}

/// Plans `ws` on `cloud` with the controller's settings. `observed_shape` is the shape of
/// bring-your-own nodes when known.
pub fn plan(
    ws: &Workspace,
    cloud: Cloud,
    observed_shape: Option<&GpuShape>,
) -> Result<WorkspacePlan, PlanError> {
    admission::plan(ws, admission_config(cloud), observed_shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::ws;

    #[test]
    fn a_tuning_workspace_without_a_method_is_not_planned_as_qlora() {
        // The webhook rejects a missing `tuning.method`; the controller used to assume qlora.
        let w = ws(
            "metadata: {name: t, namespace: n}\nresource: {instanceType: Standard_NC24ads_A100_v4}\ntuning: {preset: {name: phi-3-mini-4k-instruct}}",
        );
        assert_eq!(plan(&w, Cloud::Azure, None), Err(PlanError::NoMethod));
    }

    #[test]
    fn a_cpu_only_size_is_known_before_planning() {
        let w = ws(
            "metadata: {name: w, namespace: n}\nresource: {instanceType: Standard_D4s_v3}\ninference: {preset: {name: smollm2-135m-instruct}}",
        );
        assert!(cpu_only_size(&w, Cloud::Azure));
        assert!(!cpu_only_size(&w, Cloud::Aws), "not an AWS size");
        let gpu = ws(include_str!(
            "../../examples/inference/kaito_workspace_phi_3.yaml"
        ));
        assert!(!cpu_only_size(&gpu, Cloud::Azure));
    }
}
