//! The validating stage: every rule a workspace must satisfy, all errors together.

use std::borrow::Cow;
use std::collections::BTreeSet;

use kaito_presets::Preset;
use kaito_presets::sizing::{self, Mode, Plan, RuntimeParams};

use super::{
    ANNOTATION_MODEL_FACTS, ANNOTATION_MODEL_REVISION, AdmissionConfig, DATA_DIR, MAX_ADAPTERS,
    Provisioner, RESULTS_DIR, Verdict, bypasses_resource_checks, check_download_url, hub_preset,
    policy, sizing_mode, workspace_preset,
};
use crate::constants::RESERVED_LABELS;
use crate::types::{AdapterSpec, DataSource, PresetSpec, Workspace};

/// How many fitting sizes an error message lists.
const SUGGESTED_SKUS: usize = 5;

/// Checks a new object (`old` is `None`) or an update. Every rule runs; all errors are
/// returned together.
pub fn validate(old: Option<&Workspace>, new: &Workspace, cfg: &AdmissionConfig) -> Verdict {
    let mut v = Verdict::default();
    if let Some(old) = old {
        check_immutable(old, new, &mut v);
        // A change of metadata or status alone (finalizers, labels) is not re-judged against
        // a catalog that may have changed since the object was admitted.
        if !spec_changed(old, new) || new.metadata.deletion_timestamp.is_some() {
            return v;
        }
    }
    check_name(new, &mut v);
    match (&new.inference, &new.tuning) {
        (Some(_), Some(_)) => v.error("inference", "set either inference or tuning, not both"),
        (None, None) => v.error(
            "inference",
            "set inference (to serve a model) or tuning (to fine-tune one)",
        ),
        (Some(inference), None) => {
            match (&inference.preset, &inference.template) {
                (Some(_), Some(_)) => {
                    v.error("inference", "set either preset or template, not both")
                }
                (None, None) => v.error(
                    "inference.preset",
                    "name a model preset (or give a pod template in inference.template)",
                ),
                _ => {}
            }
            if let Some(p) = &inference.preset {
                check_preset("inference.preset", p, Mode::Serve, new, cfg, &mut v);
            }
            check_adapters(
                new,
                inference.adapters.as_deref().unwrap_or_default(),
                &mut v,
            );
        }
        (None, Some(_)) => check_tuning(new, cfg, &mut v),
    }
    check_resource(new, cfg, &mut v);
    policy::check_policy(new, cfg, &mut v);
    v
}

fn spec_changed(old: &Workspace, new: &Workspace) -> bool {
    old.resource != new.resource || old.inference != new.inference || old.tuning != new.tuning
}

fn check_immutable(old: &Workspace, new: &Workspace, v: &mut Verdict) {
    if old.inference.is_some() != new.inference.is_some()
        || old.tuning.is_some() != new.tuning.is_some()
    {
        v.error(
            "inference",
            "a workspace cannot switch between inference and tuning; create a new workspace",
        );
        return;
    }
    let immutable = "is immutable; delete and recreate the workspace to change it";
    if old.resource.count.is_some() && old.resource.count != new.resource.count {
        v.error("resource.count", immutable);
    }
    if old.resource.label_selector.is_some()
        && old.resource.label_selector != new.resource.label_selector
    {
        v.error("resource.labelSelector", immutable);
    }
    if old.resource.instance_type.is_some()
        && old.resource.instance_type != new.resource.instance_type
    {
        v.error("resource.instanceType", immutable);
    }
    let preset_name = |ws: &Workspace, tuning: bool| {
        if tuning {
            ws.tuning
                .as_ref()
                .and_then(|t| t.preset.as_ref())
                .map(|p| p.name.clone())
        } else {
            ws.inference
                .as_ref()
                .and_then(|i| i.preset.as_ref())
                .map(|p| p.name.clone())
        }
    };
    if preset_name(old, false) != preset_name(new, false) {
        v.error("inference.preset.name", immutable);
    }
    // The model a Hugging Face id resolved to stays pinned.
    for key in [ANNOTATION_MODEL_REVISION, ANNOTATION_MODEL_FACTS] {
        if old.annotation(key).is_some() && old.annotation(key) != new.annotation(key) {
            v.error(
                format!("metadata.annotations[{key}]"),
                "is written by the webhook when the workspace is created and pins the model; \
                 it cannot change (delete and recreate the workspace to serve another revision)",
            );
        }
    }
    if let (Some(o), Some(n)) = (&old.tuning, &new.tuning) {
        if preset_name(old, true) != preset_name(new, true) {
            v.error("tuning.preset.name", immutable);
        }
        if o.method != n.method {
            v.error("tuning.method", immutable);
        }
        let input_name =
            |t: &crate::types::TuningSpec| t.input.as_ref().and_then(|i| i.name.clone());
        if input_name(o) != input_name(n) {
            v.error("tuning.input.name", immutable);
        }
    }
}

fn check_name(ws: &Workspace, v: &mut Verdict) {
    match ws.metadata.name.as_deref() {
        Some(name) if !is_dns1123_label(name) => v.error(
            "metadata.name",
            format!("{name:?} is not a DNS-1123 label: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"),
        ),
        _ => {}
    }
}

/// Checks a preset reference; returns the catalog entry (or, for a Hugging Face id, the
/// preset made from its recorded facts) when it may be used.
fn check_preset<'a>(
    field: &str,
    spec: &PresetSpec,
    mode: Mode,
    ws: &Workspace,
    cfg: &'a AdmissionConfig,
    v: &mut Verdict,
) -> Option<Cow<'a, Preset>> {
    let preset = if kaito_presets::hub_model::is_hub_id(&spec.name) {
        if mode != Mode::Serve {
            v.error(
                format!("{field}.name"),
                format!(
                    "{:?} is a Hugging Face id; ids can be served (inference.preset.name) but \
                     not tuned: name a catalog preset that supports tuning ({})",
                    spec.name,
                    tunable_presets(cfg)
                ),
            );
            return None;
        }
        match hub_preset(ws, &cfg.presets) {
            Some(Ok(preset)) => Cow::Owned(preset),
            Some(Err(why)) => {
                v.error(format!("{field}.name"), why);
                return None;
            }
            // Only an inference preset is served; `hub_preset` reads that one.
            None => return None,
        }
    } else if let Some(preset) = cfg.presets.get(&spec.name) {
        Cow::Borrowed(preset)
    } else {
        let close = cfg.presets.suggestions(&spec.name, 3);
        let hint = if close.is_empty() {
            "run `kubectl kaito models list` for the presets".to_string()
        } else {
            format!("did you mean {}?", close.join(", "))
        };
        v.error(
            format!("{field}.name"),
            format!("unknown preset {:?}; {hint}", spec.name),
        );
        return None;
    };
    if let Some(reason) = &preset.deprecated {
        v.error(
            format!("{field}.name"),
            format!("preset {} is deprecated: {reason}", preset.name),
        );
        return None;
    }
    if mode == Mode::Serve && !preset.runtime_supported {
        v.error(
            format!("{field}.name"),
            format!(
                "{} is a {} model, an architecture the serving runtime (mistral.rs) does not load; it serves {}. Choose another preset",
                preset.name,
                preset.architecture,
                cfg.presets.runtime_architectures().join(", ")
            ),
        );
        return None;
    }
    let options = spec.preset_options.as_ref();
    match spec.access_mode.as_deref() {
        None | Some("public") => {}
        Some("private") => {
            if options
                .and_then(|o| o.image.as_deref())
                .is_none_or(str::is_empty)
            {
                v.error(
                    format!("{field}.presetOptions.image"),
                    "accessMode private needs the image that holds the model",
                );
            }
        }
        Some(other) => v.error(
            format!("{field}.accessMode"),
            format!("{other:?} is not an access mode: use \"public\" or \"private\""),
        ),
    }
    if preset.download_needs_token
        && spec.access_mode.as_deref() != Some("private")
        && options
            .and_then(|o| o.model_access_secret.as_deref())
            .is_none_or(str::is_empty)
    {
        v.error(
            format!("{field}.presetOptions.modelAccessSecret"),
            format!("{} is gated on Hugging Face: name a Secret whose key HF_TOKEN holds a token with access to {}", preset.name, preset.huggingface.repo),
        );
    }
    Some(preset)
}

/// A `volumeSource` (an adapter's, the training data's or the tuning output's) becomes one
/// pod volume the controller names, so it must be one volume type without `name`, as in a
/// pod's `volumes[]` entry; `what` says what the volume holds, for the message's example.
fn check_volume_source(field: &str, volume: &serde_json::Value, what: &str, v: &mut Verdict) {
    let example = format!("e.g. {{persistentVolumeClaim: {{claimName: my-claim}}}}; {what}");
    match volume.as_object() {
        Some(o) if o.contains_key("name") => v.error(
            field,
            format!("remove `name`: the volume is named by the controller; {example}"),
        ),
        Some(o) if o.len() == 1 => {}
        Some(o) => v.error(
            field,
            format!(
                "give exactly one volume type, not {} ({}); {example}",
                o.len(),
                o.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ),
        None => v.error(
            field,
            format!("not a volume source (an object naming one volume type); {example}"),
        ),
    }
}

fn check_adapters(ws: &Workspace, adapters: &[AdapterSpec], v: &mut Verdict) {
    if adapters.is_empty() {
        return;
    }
    if ws.inference.as_ref().is_some_and(|i| i.template.is_some()) {
        v.error(
            "inference.adapters",
            "adapters apply to a preset, not to a custom template",
        );
    }
    if adapters.len() > MAX_ADAPTERS {
        v.error(
            "inference.adapters",
            format!(
                "{} adapters given; at most {MAX_ADAPTERS} are allowed",
                adapters.len()
            ),
        );
    }
    let mut names = BTreeSet::new();
    for (i, adapter) in adapters.iter().enumerate() {
        let field = format!("inference.adapters[{i}]");
        match &adapter.source {
            None => v.error(
                format!("{field}.source"),
                "give the adapter's source: a name and an image (or a volumeSource)",
            ),
            Some(source) => {
                match source.name.as_deref() {
                    Some(name) if is_dns1123_label(name) => {
                        if !names.insert(name.to_string()) {
                            v.error(format!("{field}.source.name"), format!("adapter name {name:?} is used twice; adapter names must be unique"));
                        }
                    }
                    Some(name) => v.error(
                        format!("{field}.source.name"),
                        format!(
                            "{name:?} is not a DNS-1123 label (lowercase letters, digits and '-')"
                        ),
                    ),
                    None => v.error(
                        format!("{field}.source.name"),
                        "name the adapter (a DNS-1123 label)",
                    ),
                }
                if source.urls.is_some() {
                    v.error(format!("{field}.source.urls"), "adapters cannot be downloaded from URLs; publish the adapter as an image (source.image) or put it on a volume (source.volumeSource)");
                } else if source.image.is_some() == source.volume_source.is_some() {
                    v.error(
                        format!("{field}.source"),
                        "set exactly one of image and volumeSource",
                    );
                }
                if let Some(volume) = &source.volume_source {
                    check_volume_source(
                        &format!("{field}.source.volumeSource"),
                        volume,
                        "the volume must hold adapter_config.json and adapter_model.safetensors at its root",
                        v,
                    );
                }
            }
        }
        if let Some(strength) = &adapter.strength {
            match strength.trim().parse::<f64>() {
                Ok(s) if (0.0..=1.0).contains(&s) => {}
                _ => v.error(
                    format!("{field}.strength"),
                    format!("{strength:?} is not a number from \"0.0\" to \"1.0\""),
                ),
            }
        }
    }
}

fn check_tuning(ws: &Workspace, cfg: &AdmissionConfig, v: &mut Verdict) {
    let Some(tuning) = &ws.tuning else { return };
    let mode = match tuning.method.as_deref() {
        Some("lora") => Some(Mode::TuneLora),
        Some("qlora") => Some(Mode::TuneQlora),
        Some(other) => {
            v.error(
                "tuning.method",
                format!("{other:?} is not a tuning method: use \"lora\" or \"qlora\""),
            );
            None
        }
        None => {
            v.error("tuning.method", "choose \"lora\" or \"qlora\"");
            None
        }
    };
    match &tuning.preset {
        None => v.error("tuning.preset", "name the model preset to fine-tune"),
        Some(p) => {
            if let Some(preset) = check_preset(
                "tuning.preset",
                p,
                mode.unwrap_or(Mode::TuneQlora),
                ws,
                cfg,
                v,
            ) && preset.tuning.is_none()
            {
                v.error(
                    "tuning.preset.name",
                    format!(
                        "{} does not support fine-tuning; presets that do: {}",
                        preset.name,
                        tunable_presets(cfg)
                    ),
                );
            }
        }
    }
    match &tuning.input {
        None => v.error(
            "tuning.input",
            "give the training data: urls, an image or a volumeSource",
        ),
        Some(input) => check_tuning_input(input, cfg, v),
    }
    match &tuning.output {
        None => v.error(
            "tuning.output",
            "say where the adapter goes: an image (with imagePushSecret) or a volumeSource",
        ),
        Some(out) => {
            if out.image.is_some() == out.volume_source.is_some() {
                v.error("tuning.output", "set exactly one of image and volumeSource");
            }
            if let Some(volume) = &out.volume_source {
                check_volume_source(
                    "tuning.output.volumeSource",
                    volume,
                    &format!("the trainer writes the adapter to it (mounted at {RESULTS_DIR})"),
                    v,
                );
            }
            if out.image.is_some() && out.image_push_secret.as_deref().is_none_or(str::is_empty) {
                v.error(
                    "tuning.output.imagePushSecret",
                    "pushing the adapter image needs a docker-config Secret; name it here",
                );
            }
        }
    }
    if ws.resource.count.is_some_and(|c| c > 1) {
        v.error(
            "resource.count",
            "tuning runs on a single node; set count to 1",
        );
    }
}

fn check_tuning_input(input: &DataSource, cfg: &AdmissionConfig, v: &mut Verdict) {
    let set = [
        input.urls.is_some(),
        input.image.is_some(),
        input.volume_source.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        v.error(
            "tuning.input",
            "set exactly one of urls, image and volumeSource",
        );
    }
    if let Some(volume) = &input.volume_source {
        check_volume_source(
            "tuning.input.volumeSource",
            volume,
            &format!("the trainer reads the training data from it (mounted at {DATA_DIR})"),
            v,
        );
    }
    if let Some(urls) = &input.urls {
        if urls.is_empty() {
            v.error("tuning.input.urls", "give at least one URL");
        }
        for (i, url) in urls.iter().enumerate() {
            if let Err(why) = check_download_url(url, cfg.url_policy) {
                v.error(format!("tuning.input.urls[{i}]"), why);
            }
        }
    }
}

fn tunable_presets(cfg: &AdmissionConfig) -> String {
    cfg.presets
        .iter()
        .filter(|p| p.tuning.is_some() && p.deprecated.is_none())
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_resource(ws: &Workspace, cfg: &AdmissionConfig, v: &mut Verdict) {
    let bypass = bypasses_resource_checks(ws);
    if let Some(count) = ws.resource.count
        && count < 1
    {
        v.error(
            "resource.count",
            format!("{count} nodes is not possible; use 1 or more"),
        );
    }
    match &ws.resource.label_selector {
        None => v.error(
            "resource.labelSelector",
            "give matchLabels that the GPU nodes carry (e.g. apps: my-model)",
        ),
        Some(selector) => {
            let keys = selector
                .match_labels
                .iter()
                .flat_map(|m| m.keys().cloned())
                .chain(
                    selector
                        .match_expressions
                        .iter()
                        .flatten()
                        .map(|e| e.key.clone()),
                );
            for key in keys {
                if RESERVED_LABELS.contains(&key.as_str()) {
                    v.error(
                        "resource.labelSelector",
                        format!("label {key} is set by KAITO itself; remove it from the selector"),
                    );
                }
            }
            if selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && cfg.provisioner != Provisioner::Byo
            {
                v.error(
                    "resource.labelSelector.matchLabels",
                    "give at least one label; new GPU nodes are created with these labels",
                );
            }
        }
    }
    for (i, node) in ws.resource.preferred_nodes.iter().flatten().enumerate() {
        if !is_dns1123_subdomain(node) {
            v.error(
                format!("resource.preferredNodes[{i}]"),
                format!("{node:?} is not a node name"),
            );
        }
    }
    // GPU fit: only for a preset that passed its own checks and a valid mode.
    let Some(preset) = workspace_preset(ws, &cfg.presets) else {
        return;
    };
    let preset = preset.as_ref();
    if preset.deprecated.is_some() || (ws.inference.is_some() && !preset.runtime_supported) {
        return;
    }
    let Some(mode) = sizing_mode(ws) else { return };
    let field = "resource.instanceType";
    let Some(instance_type) = ws.resource.instance_type.as_deref() else {
        if cfg.provisioner != Provisioner::Byo {
            v.error(
                field,
                format!(
                    "no {} GPU size fits {} for {mode}; see `kubectl kaito models describe {}`",
                    cfg.cloud, preset.name, preset.name
                ),
            );
        }
        return;
    };
    let Some(sku) = cfg.skus.get(cfg.cloud, instance_type) else {
        let names = |skus: &mut dyn Iterator<Item = &kaito_presets::Sku>| {
            skus.map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
        };
        v.resource_problem(
            bypass,
            field,
            format!(
                "{instance_type:?} is not a known {} size; GPU sizes: {}; CPU-only sizes (small presets, served on the CPU): {}",
                cfg.cloud,
                names(&mut cfg.skus.gpu_skus(cfg.cloud)),
                names(&mut cfg.skus.cpu_skus(cfg.cloud)),
            ),
        );
        return;
    };
    let plan = sizing::plan(preset, mode, RuntimeParams::default(), &sku.shape());
    if plan.fits() {
        return;
    }
    let first_names = |fits: Vec<(&kaito_presets::Sku, Plan)>| {
        fits.into_iter()
            .take(SUGGESTED_SKUS)
            .map(|(s, _)| s.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let fitting = first_names(sizing::fitting_skus(
        preset,
        mode,
        RuntimeParams::default(),
        &cfg.skus,
        cfg.cloud,
    ));
    let cpu_too_small = plan
        .problems
        .iter()
        .any(|p| matches!(p, sizing::Problem::CpuMemory { .. }));
    let hint = if cpu_too_small {
        // A CPU-only size asked for a preset that does not fit its memory: a bigger CPU-only
        // size, or a GPU size.
        let cpu = first_names(sizing::fitting_cpu_skus(
            preset,
            mode,
            RuntimeParams::default(),
            &cfg.skus,
            cfg.cloud,
        ));
        let cpu = if cpu.is_empty() {
            format!("no {} CPU-only size has enough memory", cfg.cloud)
        } else {
            format!("CPU-only sizes that fit: {cpu}")
        };
        let gpu = if fitting.is_empty() {
            format!("no {} GPU size fits", cfg.cloud)
        } else {
            format!("GPU sizes that fit: {fitting}")
        };
        format!(
            "set resource.instanceType to a CPU-only size with more memory ({cpu}) or to a GPU size ({gpu})"
        )
    } else if fitting.is_empty() {
        format!("no {} size fits", cfg.cloud)
    } else {
        format!("sizes that fit: {fitting}")
    };
    let reasons = plan
        .problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    v.resource_problem(bypass, field, format!("{reasons}; {hint}"));
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}
