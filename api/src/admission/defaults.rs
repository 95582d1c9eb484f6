//! The defaulting stage: what can be computed is filled in (the mutating webhook).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kaito_presets::sizing::{self, Mode, RuntimeParams};

use super::{AdmissionConfig, DEFAULT_SELECTOR_LABEL, Provisioner, workspace_preset};
use crate::constants::ANNOTATION_SIZING;
use crate::types::Workspace;

/// Which sizing mode a workspace needs; `None` when its tuning method is not valid.
pub fn sizing_mode(ws: &Workspace) -> Option<Mode> {
    match &ws.tuning {
        None => Some(Mode::Serve),
        Some(t) => match t.method.as_deref() {
            Some("lora") => Some(Mode::TuneLora),
            Some("qlora") => Some(Mode::TuneQlora),
            _ => None,
        },
    }
}

/// Fills in what can be computed. Idempotent: defaulting a defaulted object changes nothing.
///
/// - `resource.instanceType`: the smallest size of the configured cloud that fits the preset
///   (not for bring-your-own nodes, whose shape comes from the nodes), explained in the
///   `kaito.sh/sizing` annotation;
/// - `resource.count`: 1 (one replica per node; the runtime serves a whole copy per node);
/// - `resource.labelSelector`: `apps: <workspace name>`;
/// - `inference.preset.accessMode`: `public`; `inference.adapters[].strength`: `"1.0"`.
pub fn apply_defaults(ws: &mut Workspace, cfg: &AdmissionConfig) {
    if ws.inference.is_none() && ws.tuning.is_none() {
        return;
    }
    if ws.resource.count.is_none() {
        ws.resource.count = Some(1);
    }
    if ws.resource.label_selector.is_none()
        && let Some(name) = ws.metadata.name.clone()
    {
        ws.resource.label_selector = Some(LabelSelector {
            match_labels: Some([(DEFAULT_SELECTOR_LABEL.to_string(), name)].into()),
            ..LabelSelector::default()
        });
    }
    if let Some(inference) = &mut ws.inference {
        if let Some(preset) = &mut inference.preset
            && preset.access_mode.is_none()
        {
            preset.access_mode = Some("public".into());
        }
        for adapter in inference.adapters.iter_mut().flatten() {
            if adapter.strength.is_none() {
                adapter.strength = Some("1.0".into());
            }
        }
    }
    if ws.resource.instance_type.is_none() && cfg.provisioner != Provisioner::Byo {
        default_instance_type(ws, cfg);
    }
}

fn default_instance_type(ws: &mut Workspace, cfg: &AdmissionConfig) {
    let Some(preset) = workspace_preset(ws, &cfg.presets) else {
        return;
    };
    let Some(mode) = sizing_mode(ws) else { return };
    let Some((sku, plan)) = sizing::smallest_fitting_sku(
        &preset,
        mode,
        RuntimeParams::default(),
        &cfg.skus,
        cfg.cloud,
    ) else {
        return;
    };
    let mut why = format!(
        "{} chosen for {} of {}: the smallest {} size that fits (fewest GPUs, then least GPU memory); {}",
        sku.name,
        mode,
        preset.name,
        cfg.cloud,
        plan.summary()
    );
    for note in &plan.notes {
        why.push_str("; ");
        why.push_str(note);
    }
    ws.resource.instance_type = Some(sku.name.clone());
    ws.metadata
        .annotations
        .get_or_insert_default()
        .insert(ANNOTATION_SIZING.into(), why);
}
