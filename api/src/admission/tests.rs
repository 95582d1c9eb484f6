//! One test per rule of the admission contract; the names say the rule.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kaito_presets::Mode;

use super::*;
use crate::constants::ANNOTATION_SIZING;
use crate::types::{AdapterSpec, DataSource};

fn cfg() -> AdmissionConfig {
    AdmissionConfig::new(Cloud::Azure, Provisioner::Aks)
}

fn ws(yaml: &str) -> Workspace {
    serde_yaml::from_str(yaml).expect("test YAML is a Workspace")
}

fn seed(name: &str) -> Workspace {
    let text = match name {
        "inference" => include_str!("../../../examples/inference/kaito_workspace_phi_3.yaml"),
        "adapter" => {
            include_str!("../../../examples/inference/kaito_workspace_phi_3_with_adapters.yaml")
        }
        "tuning" => include_str!("../../../examples/fine-tuning/kaito_workspace_tuning_phi_3.yaml"),
        other => panic!("no seed {other}"),
    };
    ws(text)
}

/// The sizing of a workspace that plans.
fn sizing(w: &Workspace) -> kaito_presets::Plan {
    plan(w, &cfg(), None)
        .expect("plans")
        .sizing
        .expect("a preset is sized")
}

/// Defaults, then validates as the webhook does on create.
fn admit(mut w: Workspace) -> (Workspace, Verdict) {
    apply_defaults(&mut w, &cfg());
    let verdict = validate(None, &w, &cfg());
    (w, verdict)
}

fn errors_of(w: Workspace) -> Vec<FieldError> {
    admit(w).1.errors
}

fn assert_rejected(w: Workspace, field: &str, needle: &str) {
    let errors = errors_of(w);
    assert!(
        errors
            .iter()
            .any(|e| e.field == field && e.message.contains(needle)),
        "expected an error on {field} containing {needle:?}, got {errors:#?}"
    );
}

const INFERENCE: &str = "
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: w}
resource:
  instanceType: Standard_NC6s_v3
  labelSelector: {matchLabels: {apps: w}}
inference:
  preset: {name: phi-3-mini-4k-instruct}
";

const TUNING: &str = "
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: t}
resource:
  instanceType: Standard_NC6s_v3
  labelSelector: {matchLabels: {app: t}}
tuning:
  preset: {name: phi-3-mini-128k-instruct}
  method: qlora
  input: {urls: ['https://example.com/data.parquet']}
  output: {image: 'registry.example.com/a:1', imagePushSecret: push}
";

fn with_adapters(adapters: &str) -> Workspace {
    ws(&format!("{INFERENCE}  adapters:\n{adapters}"))
}

// ---- seeds ----------------------------------------------------------------------------

#[test]
fn every_seed_is_accepted_unchanged_apart_from_defaults() {
    for name in ["inference", "adapter", "tuning"] {
        let original = seed(name);
        let (defaulted, verdict) = admit(original.clone());
        assert!(verdict.is_allowed(), "{name}: {}", verdict.message());
        assert_eq!(
            defaulted.resource.instance_type, original.resource.instance_type,
            "{name}: user's size kept"
        );
        assert_eq!(
            defaulted.resource.label_selector, original.resource.label_selector,
            "{name}: user's selector kept"
        );
        assert_eq!(defaulted.resource.count, Some(1), "{name}: count defaulted");
    }
}

#[test]
fn inference_seed_defaults_access_mode_and_adapter_strength() {
    let (w, _) = admit(seed("inference"));
    assert_eq!(
        w.inference
            .as_ref()
            .and_then(|i| i.preset.as_ref())
            .and_then(|p| p.access_mode.as_deref()),
        Some("public")
    );
    let (mut w, _) = admit(seed("adapter"));
    let adapter = &mut w
        .inference
        .as_mut()
        .and_then(|i| i.adapters.as_mut())
        .expect("adapters")[0];
    assert_eq!(
        adapter.strength.as_deref(),
        Some("1.0"),
        "the seed's own strength is kept"
    );
    adapter.strength = None;
    apply_defaults(&mut w, &cfg());
    assert_eq!(
        w.inference.and_then(|i| i.adapters).expect("adapters")[0]
            .strength
            .as_deref(),
        Some("1.0")
    );
}

#[test]
fn tuning_seed_keeps_method_required_and_config_absent() {
    let (w, verdict) = admit(seed("tuning"));
    assert!(verdict.is_allowed(), "{}", verdict.message());
    let t = w.tuning.expect("tuning");
    assert_eq!(t.method.as_deref(), Some("qlora"));
    assert_eq!(
        t.config, None,
        "absent config means the built-in qlora template"
    );
}

// ---- defaults ---------------------------------------------------------------------------

#[test]
fn missing_instance_type_defaults_to_smallest_fitting_size_with_a_reason() {
    let mut w = ws(INFERENCE);
    w.resource.instance_type = None;
    let (w, verdict) = admit(w);
    assert!(verdict.is_allowed(), "{}", verdict.message());
    assert_eq!(
        w.resource.instance_type.as_deref(),
        Some("Standard_NC4as_T4_v3")
    );
    let why = w.annotation(ANNOTATION_SIZING).expect("sizing annotation");
    assert!(
        why.contains("smallest azure size that fits") && why.contains("phi-3-mini-4k-instruct"),
        "{why}"
    );
}

#[test]
fn missing_instance_type_for_qlora_tuning_is_sized_for_qlora() {
    let mut w = ws(TUNING);
    w.resource.instance_type = None;
    let (w, verdict) = admit(w);
    assert!(verdict.is_allowed(), "{}", verdict.message());
    assert!(
        w.annotation(ANNOTATION_SIZING)
            .is_some_and(|a| a.contains("QLoRA"))
    );
}

#[test]
fn byo_provisioner_leaves_instance_type_to_the_nodes() {
    let byo = AdmissionConfig::new(Cloud::Azure, Provisioner::Byo);
    let mut w = ws(INFERENCE);
    w.resource.instance_type = None;
    apply_defaults(&mut w, &byo);
    assert_eq!(w.resource.instance_type, None);
    assert!(validate(None, &w, &byo).is_allowed());
}

#[test]
fn missing_label_selector_defaults_to_one_derived_from_the_name() {
    let mut w = ws(INFERENCE);
    w.resource.label_selector = None;
    let (w, verdict) = admit(w);
    assert!(verdict.is_allowed(), "{}", verdict.message());
    assert_eq!(
        w.match_labels()
            .get(DEFAULT_SELECTOR_LABEL)
            .map(String::as_str),
        Some("w")
    );
}

#[test]
fn defaulting_is_idempotent() {
    for w in [seed("inference"), seed("adapter"), seed("tuning"), {
        let mut w = ws(INFERENCE);
        w.resource = Default::default();
        w
    }] {
        let mut once = w.clone();
        apply_defaults(&mut once, &cfg());
        let mut twice = once.clone();
        apply_defaults(&mut twice, &cfg());
        assert_eq!(once, twice);
    }
}

// ---- shape of the object ----------------------------------------------------------------

#[test]
fn name_must_be_a_dns1123_label() {
    let mut w = ws(INFERENCE);
    w.metadata.name = Some("My_Workspace".into());
    assert_rejected(w, "metadata.name", "DNS-1123");
}

#[test]
fn exactly_one_of_inference_and_tuning() {
    let mut both = ws(INFERENCE);
    both.tuning = ws(TUNING).tuning;
    assert_rejected(both, "inference", "not both");
    let mut neither = ws(INFERENCE);
    neither.inference = None;
    assert_rejected(neither, "inference", "set inference");
}

#[test]
fn exactly_one_of_preset_and_template() {
    let mut w = ws(INFERENCE);
    w.inference.as_mut().expect("inference").template = Some(Default::default());
    assert_rejected(w, "inference", "either preset or template");
}

// ---- presets -----------------------------------------------------------------------------

#[test]
fn unknown_preset_is_rejected_with_close_matches() {
    let w = ws(&INFERENCE.replace("phi-3-mini-4k-instruct", "phi-3-mini-4k"));
    assert_rejected(
        w,
        "inference.preset.name",
        "did you mean phi-3-mini-4k-instruct",
    );
}

#[test]
fn deprecated_preset_is_rejected_saying_so() {
    let w = ws(&INFERENCE.replace("phi-3-mini-4k-instruct", "phi-2"));
    assert_rejected(w, "inference.preset.name", "deprecated");
}

#[test]
fn falcon_is_rejected_because_the_runtime_cannot_serve_it() {
    let w = ws(&INFERENCE
        .replace("phi-3-mini-4k-instruct", "falcon-7b")
        .replace("Standard_NC6s_v3", "Standard_NC24ads_A100_v4"));
    assert_rejected(w, "inference.preset.name", "FalconForCausalLM");
}

#[test]
fn gated_preset_needs_a_model_access_secret() {
    let w = ws(&INFERENCE
        .replace("phi-3-mini-4k-instruct", "llama-3.1-8b-instruct")
        .replace("Standard_NC6s_v3", "Standard_NC24ads_A100_v4"));
    assert_rejected(
        w,
        "inference.preset.presetOptions.modelAccessSecret",
        "HF_TOKEN",
    );
}

#[test]
fn access_mode_is_public_or_private_and_private_needs_an_image() {
    let mut w = ws(INFERENCE);
    w.inference
        .as_mut()
        .and_then(|i| i.preset.as_mut())
        .expect("preset")
        .access_mode = Some("secret".into());
    assert_rejected(w, "inference.preset.accessMode", "public");
    let mut w = ws(INFERENCE);
    w.inference
        .as_mut()
        .and_then(|i| i.preset.as_mut())
        .expect("preset")
        .access_mode = Some("private".into());
    assert_rejected(w, "inference.preset.presetOptions.image", "image");
}

// ---- GPU sizing ----------------------------------------------------------------------------

#[test]
fn unknown_instance_type_is_rejected_listing_supported_sizes() {
    let w = ws(&INFERENCE.replace("Standard_NC6s_v3", "Standard_NC6_v9"));
    assert_rejected(
        w,
        "resource.instanceType",
        "GPU sizes: Standard_NV36ads_A10_v5",
    );
}

#[test]
fn instance_type_lookup_ignores_case() {
    let w = ws(&INFERENCE.replace("Standard_NC6s_v3", "standard_nc6s_v3"));
    assert!(admit(w).1.is_allowed());
}

#[test]
fn phi3_medium_on_a_v100_is_rejected_with_needs_has_and_fitting_sizes() {
    let w = ws(&INFERENCE.replace("phi-3-mini-4k-instruct", "phi-3-medium-4k-instruct"));
    let errors = errors_of(w);
    let e = errors
        .iter()
        .find(|e| e.field == "resource.instanceType")
        .expect("GPU-fit error");
    for needle in [
        "at least 28 GiB",
        "Standard_NC6s_v3",
        "has 16 GiB",
        "sizes that fit: Standard_NC24ads_A100_v4",
    ] {
        assert!(
            e.message.contains(needle),
            "{needle:?} missing from {}",
            e.message
        );
    }
}

#[test]
fn a_small_preset_is_admitted_on_a_cpu_only_size() {
    let w = ws(&INFERENCE
        .replace("Standard_NC6s_v3", "Standard_D4s_v3")
        .replace("phi-3-mini-4k-instruct", "smollm2-135m-instruct"));
    let (w, verdict) = admit(w);
    assert!(verdict.is_allowed(), "{}", verdict.message());
    assert!(verdict.warnings.is_empty(), "{:?}", verdict.warnings);
    // The instance type the user asked for stays; the plan is a CPU plan.
    assert_eq!(w.resource.instance_type.as_deref(), Some("Standard_D4s_v3"));
    let plan = sizing(&w);
    assert!(plan.fits(), "{:?}", plan.problems);
    assert_eq!(plan.dtype, kaito_presets::Dtype::F32);
    assert_eq!(plan.gpus_per_node, 0);
    // Also on AWS's CPU-only sizes.
    let aws = AdmissionConfig::new(Cloud::Aws, Provisioner::Karpenter);
    let mut w = ws(&INFERENCE
        .replace("Standard_NC6s_v3", "m5.xlarge")
        .replace("phi-3-mini-4k-instruct", "smollm2-135m-instruct"));
    apply_defaults(&mut w, &aws);
    let verdict = validate(None, &w, &aws);
    assert!(verdict.is_allowed(), "{}", verdict.message());
}

#[test]
fn a_big_preset_on_a_cpu_only_size_is_refused_with_needed_available_and_the_fix() {
    let w = ws(&INFERENCE
        .replace("Standard_NC6s_v3", "Standard_D4s_v3")
        .replace("phi-3-mini-4k-instruct", "llama-3.3-70b-instruct"));
    let errors = errors_of(w);
    let e = errors
        .iter()
        .find(|e| e.field == "resource.instanceType")
        .unwrap_or_else(|| panic!("a resource.instanceType error in {errors:#?}"));
    for needle in [
        "serving llama-3.3-70b-instruct on the CPU needs",
        "of memory",
        "Standard_D4s_v3 (no GPU, 16 GiB memory) lets a pod use 12.8 GiB",
        "set resource.instanceType to a CPU-only size with more memory",
        "no azure CPU-only size has enough memory",
        "or to a GPU size (GPU sizes that fit: Standard_NC80adis_H100_v5",
    ] {
        assert!(
            e.message.contains(needle),
            "{needle:?} missing from {}",
            e.message
        );
    }
    assert!(e.to_string().starts_with("resource.instanceType: "), "{e}");
}

#[test]
fn a_cpu_only_size_too_small_for_a_mid_preset_names_the_cpu_sizes_that_fit() {
    let w = ws(&INFERENCE.replace("Standard_NC6s_v3", "Standard_D4s_v3"));
    let errors = errors_of(w);
    let e = errors
        .iter()
        .find(|e| e.field == "resource.instanceType")
        .unwrap_or_else(|| panic!("a resource.instanceType error in {errors:#?}"));
    assert!(
        e.message
            .contains("CPU-only sizes that fit: Standard_D8s_v3"),
        "{}",
        e.message
    );
}

#[test]
fn tuning_on_a_cpu_only_size_is_refused_because_it_needs_a_gpu() {
    let w = ws(&TUNING.replace("Standard_NC6s_v3", "Standard_D16s_v3"));
    assert_rejected(w, "resource.instanceType", "needs a GPU and");
}

#[test]
fn bypass_annotation_turns_gpu_fit_errors_into_warnings() {
    let mut w = ws(&INFERENCE.replace("phi-3-mini-4k-instruct", "phi-3-medium-4k-instruct"));
    w.metadata.annotations = Some(
        [(
            ANNOTATION_BYPASS_RESOURCE_CHECKS.to_string(),
            "True".to_string(),
        )]
        .into(),
    );
    let (w, verdict) = admit(w);
    assert!(verdict.is_allowed(), "{}", verdict.message());
    assert!(
        verdict.warnings.iter().any(|w| w.contains("28 GiB")),
        "{:?}",
        verdict.warnings
    );
    // And the controller plans what the webhook admitted: the size as asked, problems noted.
    let planned = plan(&w, &cfg(), None).expect("planned as asked");
    let sizing = planned.sizing.expect("sized");
    assert!(!sizing.fits());
    assert_eq!(planned.gpus_per_node, 1);
    assert_eq!(planned.instance_type, "Standard_NC6s_v3");
    // Without the annotation the plan says why it does not fit.
    let mut strict = w.clone();
    strict.metadata.annotations = None;
    assert!(matches!(
        plan(&strict, &cfg(), None),
        Err(PlanError::DoesNotFit(_))
    ));
}

#[test]
fn all_errors_are_reported_together() {
    let w = ws(&INFERENCE.replace("phi-3-mini-4k-instruct", "phi-3-medium-4k-instruct"));
    let mut w = w;
    w.metadata.name = Some("Bad_Name".into());
    w.resource.count = Some(0);
    let fields: BTreeSet<String> = errors_of(w).into_iter().map(|e| e.field).collect();
    for f in ["metadata.name", "resource.count", "resource.instanceType"] {
        assert!(fields.contains(f), "{f} missing from {fields:?}");
    }
}

#[test]
fn reserved_labels_are_refused_in_selectors() {
    let w = ws(&INFERENCE.replace("{apps: w}", "{kaito.sh/workspace: w}"));
    assert_rejected(w, "resource.labelSelector", "set by KAITO itself");
}

// ---- adapters -----------------------------------------------------------------------------

#[test]
fn at_most_ten_adapters() {
    let eleven: String = (0..11)
        .map(|i| format!("    - source: {{name: a{i}, image: 'r.io/a{i}:1'}}\n"))
        .collect();
    assert_rejected(with_adapters(&eleven), "inference.adapters", "at most 10");
    let ten: String = (0..10)
        .map(|i| format!("    - source: {{name: a{i}, image: 'r.io/a{i}:1'}}\n"))
        .collect();
    assert!(admit(with_adapters(&ten)).1.is_allowed());
}

#[test]
fn adapter_names_are_unique() {
    let w = with_adapters(
        "    - source: {name: a, image: 'r.io/a:1'}\n    - source: {name: a, image: 'r.io/b:1'}\n",
    );
    assert_rejected(w, "inference.adapters[1].source.name", "used twice");
}

#[test]
fn adapter_names_are_dns1123_labels() {
    let w = with_adapters("    - source: {name: My.Adapter, image: 'r.io/a:1'}\n");
    assert_rejected(w, "inference.adapters[0].source.name", "DNS-1123");
}

#[test]
fn adapters_cannot_come_from_urls() {
    let w = with_adapters("    - source: {name: a, urls: ['https://example.com/a']}\n");
    assert_rejected(
        w,
        "inference.adapters[0].source.urls",
        "cannot be downloaded from URLs",
    );
}

#[test]
fn adapters_on_a_volume_name_one_volume_type() {
    let w = with_adapters(
        "    - source: {name: a, volumeSource: {persistentVolumeClaim: {claimName: tuned}}}\n      strength: '0.5'\n",
    );
    assert!(admit(w).1.is_allowed());
    let w = with_adapters("    - source: {name: a, volumeSource: {}}\n");
    assert_rejected(
        w,
        "inference.adapters[0].source.volumeSource",
        "give exactly one volume type, not 0",
    );
    let w = with_adapters(
        "    - source: {name: a, volumeSource: {persistentVolumeClaim: {claimName: t}, emptyDir: {}}}\n",
    );
    assert_rejected(
        w,
        "inference.adapters[0].source.volumeSource",
        "exactly one volume type, not 2",
    );
    let w = with_adapters(
        "    - source: {name: a, volumeSource: {name: v, persistentVolumeClaim: {claimName: t}}}\n",
    );
    assert_rejected(
        w,
        "inference.adapters[0].source.volumeSource",
        "remove `name`",
    );
    let w = with_adapters("    - source: {name: a, volumeSource: tuned}\n");
    assert_rejected(
        w,
        "inference.adapters[0].source.volumeSource",
        "not a volume source",
    );
}

#[test]
fn tuning_volumes_name_one_volume_type() {
    let on_volumes = |input: &str, output: &str| {
        ws(&TUNING
            .replace(
                "input: {urls: ['https://example.com/data.parquet']}",
                &format!("input: {{volumeSource: {input}}}"),
            )
            .replace(
                "output: {image: 'registry.example.com/a:1', imagePushSecret: push}",
                &format!("output: {{volumeSource: {output}}}"),
            ))
    };
    let pvc = "{persistentVolumeClaim: {claimName: c}}";
    assert!(admit(on_volumes(pvc, pvc)).1.is_allowed());
    let two = "{persistentVolumeClaim: {claimName: c}, emptyDir: {}}";
    assert_rejected(
        on_volumes(two, pvc),
        "tuning.input.volumeSource",
        "exactly one volume type, not 2 (",
    );
    assert_rejected(
        on_volumes(pvc, "{name: out, emptyDir: {}}"),
        "tuning.output.volumeSource",
        "remove `name`",
    );
    assert_rejected(
        on_volumes(pvc, "results"),
        "tuning.output.volumeSource",
        "mounted at /mnt/results",
    );
}

#[test]
fn adapter_strength_is_a_number_from_zero_to_one() {
    let w = with_adapters("    - source: {name: a, image: 'r.io/a:1'}\n      strength: '1.5'\n");
    assert_rejected(w, "inference.adapters[0].strength", "\"0.0\" to \"1.0\"");
    let w = with_adapters("    - source: {name: a, image: 'r.io/a:1'}\n      strength: 'strong'\n");
    assert_rejected(w, "inference.adapters[0].strength", "not a number");
    let w = with_adapters("    - source: {name: a, image: 'r.io/a:1'}\n      strength: '0.25'\n");
    assert!(admit(w).1.is_allowed());
}

// ---- tuning --------------------------------------------------------------------------------

#[test]
fn tuning_method_is_lora_or_qlora_and_required() {
    assert_rejected(
        ws(&TUNING.replace("method: qlora", "method: full")),
        "tuning.method",
        "\"lora\" or \"qlora\"",
    );
    assert_rejected(
        ws(&TUNING.replace("  method: qlora\n", "")),
        "tuning.method",
        "choose",
    );
}

#[test]
fn lora_on_a_v100_does_not_fit_but_qlora_does() {
    assert_rejected(
        ws(&TUNING.replace("method: qlora", "method: lora")),
        "resource.instanceType",
        "LoRA tuning",
    );
    assert!(admit(ws(TUNING)).1.is_allowed());
}

#[test]
fn tuning_is_single_node() {
    let mut w = ws(TUNING);
    w.resource.count = Some(2);
    assert_rejected(w, "resource.count", "single node");
}

#[test]
fn tuning_preset_must_support_tuning() {
    let w = ws(&TUNING
        .replace("phi-3-mini-128k-instruct", "deepseek-r1-distill-llama-8b")
        .replace("Standard_NC6s_v3", "Standard_NC24ads_A100_v4"));
    assert_rejected(w, "tuning.preset.name", "does not support fine-tuning");
}

#[test]
fn tuning_input_is_exactly_one_source() {
    let w = ws(&TUNING.replace(
        "input: {urls: ['https://example.com/data.parquet']}",
        "input: {urls: ['https://example.com/d'], image: 'r.io/d:1'}",
    ));
    assert_rejected(
        w,
        "tuning.input",
        "exactly one of urls, image and volumeSource",
    );
}

#[test]
fn tuning_input_urls_must_be_public() {
    for (url, needle) in [
        ("http://169.254.169.254/latest", "metadata"),
        ("http://localhost/data", "this machine"),
        ("http://10.0.0.1/data", "private"),
        ("ftp://example.com/data", "scheme"),
    ] {
        let w = ws(&TUNING.replace("https://example.com/data.parquet", url));
        assert_rejected(w, "tuning.input.urls[0]", needle);
    }
}

#[test]
fn tuning_output_is_exactly_one_destination_and_an_image_needs_a_push_secret() {
    let w = ws(&TUNING.replace(", imagePushSecret: push", ""));
    assert_rejected(w, "tuning.output.imagePushSecret", "docker-config Secret");
    let w = ws(&TUNING.replace(
        "output: {image: 'registry.example.com/a:1', imagePushSecret: push}",
        "output: {}",
    ));
    assert_rejected(w, "tuning.output", "exactly one of image and volumeSource");
}

// ---- updates -------------------------------------------------------------------------------

fn update(old: &Workspace, change: impl FnOnce(&mut Workspace)) -> Verdict {
    let mut old = old.clone();
    apply_defaults(&mut old, &cfg());
    let mut new = old.clone();
    change(&mut new);
    apply_defaults(&mut new, &cfg());
    validate(Some(&old), &new, &cfg())
}

fn assert_update_rejected(verdict: Verdict, field: &str) {
    assert!(
        verdict
            .errors
            .iter()
            .any(|e| e.field == field && e.message.contains("immutable")),
        "{field}: {verdict:#?}"
    );
}

#[test]
fn preset_name_is_immutable() {
    let v = update(&ws(INFERENCE), |w| {
        w.inference
            .as_mut()
            .and_then(|i| i.preset.as_mut())
            .expect("preset")
            .name = "phi-3.5-mini-instruct".into();
    });
    assert_update_rejected(v, "inference.preset.name");
}

#[test]
fn instance_type_is_immutable_once_set() {
    let v = update(&ws(INFERENCE), |w| {
        w.resource.instance_type = Some("Standard_NC24ads_A100_v4".into())
    });
    assert_update_rejected(v, "resource.instanceType");
}

#[test]
fn count_and_label_selector_are_immutable() {
    assert_update_rejected(
        update(&ws(INFERENCE), |w| w.resource.count = Some(2)),
        "resource.count",
    );
    assert_update_rejected(
        update(&ws(INFERENCE), |w| {
            w.resource.label_selector = Some(LabelSelector {
                match_labels: Some([("x".to_string(), "y".to_string())].into()),
                ..Default::default()
            })
        }),
        "resource.labelSelector",
    );
}

#[test]
fn tuning_method_preset_and_input_name_are_immutable() {
    assert_update_rejected(
        update(&ws(TUNING), |w| {
            w.tuning.as_mut().expect("t").method = Some("lora".into())
        }),
        "tuning.method",
    );
    assert_update_rejected(
        update(&ws(TUNING), |w| {
            w.tuning
                .as_mut()
                .and_then(|t| t.input.as_mut())
                .expect("i")
                .name = Some("x".into())
        }),
        "tuning.input.name",
    );
}

#[test]
fn inference_and_tuning_cannot_be_toggled() {
    let v = update(&ws(INFERENCE), |w| {
        w.inference = None;
        w.tuning = ws(TUNING).tuning;
    });
    assert!(
        v.errors.iter().any(|e| e.message.contains("cannot switch")),
        "{v:#?}"
    );
}

#[test]
fn adapters_may_change_on_update() {
    let v = update(&ws(INFERENCE), |w| {
        w.inference.as_mut().expect("i").adapters = Some(vec![AdapterSpec {
            source: Some(DataSource {
                name: Some("a".into()),
                image: Some("r.io/a:1".into()),
                ..Default::default()
            }),
            strength: Some("0.5".into()),
        }]);
    });
    assert!(v.is_allowed(), "{}", v.message());
}

#[test]
fn metadata_only_updates_are_not_rejudged() {
    // An object admitted earlier stays updatable (e.g. to add a finalizer) even if it would
    // not pass today's rules.
    let mut old = ws(&INFERENCE.replace("Standard_NC6s_v3", "Standard_Retired_v1"));
    old.resource.count = Some(1);
    let mut new = old.clone();
    new.metadata.finalizers = Some(vec!["workspace.finalizer.kaito.sh".into()]);
    assert!(validate(Some(&old), &new, &cfg()).is_allowed());
}

// ---- plan ----------------------------------------------------------------------------------

#[test]
fn the_plan_is_the_sizing_of_the_defaulted_workspace() {
    let (w, _) = admit(seed("inference"));
    let plan = sizing(&w);
    assert!(plan.fits());
    assert_eq!(plan.dtype.as_str(), "f16");
    assert_eq!(plan.max_model_len, Some(4096));
    let (t, _) = admit(seed("tuning"));
    assert_eq!(sizing(&t).mode, Mode::TuneQlora);
}

// ---- the installation's policy ------------------------------------------------------------

const TEMPLATE: &str = "
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: tpl}
resource:
  instanceType: Standard_NC6s_v3
  labelSelector: {matchLabels: {apps: tpl}}
inference:
  template:
    spec:
      containers:
        - name: server
          image: registry.example.com/server:1
";

fn template_with(extra_spec: &str, container_security: &str) -> Workspace {
    let mut text = TEMPLATE.to_string();
    if !container_security.is_empty() {
        text.push_str(&format!(
            "          securityContext: {container_security}\n"
        ));
    }
    if !extra_spec.is_empty() {
        text.push_str(&format!("      {extra_spec}\n"));
    }
    ws(&text)
}

fn with_policy(policy: PodPolicy) -> AdmissionConfig {
    AdmissionConfig {
        pod_policy: policy,
        ..cfg()
    }
}

fn errors_under(w: &Workspace, config: &AdmissionConfig) -> Vec<FieldError> {
    let mut w = w.clone();
    apply_defaults(&mut w, config);
    validate(None, &w, config).errors
}

#[test]
fn resource_count_is_capped_by_the_installation_policy() {
    let mut w = ws(INFERENCE);
    w.resource.count = Some(1000);
    assert_rejected(
        w.clone(),
        "resource.count",
        "more than this installation allows for one workspace (10); use at most 10, or ask the \
         cluster admin to raise the chart value policy.maxNodesPerWorkspace",
    );
    w.resource.count = Some(DEFAULT_MAX_NODES_PER_WORKSPACE as i32);
    assert!(
        errors_of(w.clone()).is_empty(),
        "{:#?}",
        errors_of(w.clone())
    );
    let raised = with_policy(PodPolicy {
        max_nodes_per_workspace: 1000,
        ..PodPolicy::default()
    });
    w.resource.count = Some(1000);
    assert!(errors_under(&w, &raised).is_empty());
}

#[test]
fn a_plain_template_is_admitted() {
    let errors = errors_of(template_with("", "{runAsNonRoot: true}"));
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn host_path_in_a_template_is_refused_unless_the_policy_allows_it() {
    let w = template_with(
        "volumes: [{name: root, hostPath: {path: /}}, {name: scratch, emptyDir: {}}]",
        "",
    );
    assert_rejected(
        w.clone(),
        "inference.template.spec.volumes[0].hostPath",
        "hostPath volumes are not allowed here: they expose the node's files to the \
         workspace's pods; use a persistentVolumeClaim, or ask the cluster admin to set the \
         chart value policy.allowHostPath",
    );
    assert_eq!(errors_of(w.clone()).len(), 1, "the emptyDir is fine");
    let allowed = with_policy(PodPolicy {
        allow_host_path: true,
        ..PodPolicy::default()
    });
    assert!(errors_under(&w, &allowed).is_empty());
}

#[test]
fn host_path_volume_sources_are_refused_for_adapters_and_tuning() {
    let w = with_adapters("    - source: {name: a, volumeSource: {hostPath: {path: /etc}}}\n");
    assert_rejected(
        w,
        "inference.adapters[0].source.volumeSource.hostPath",
        "policy.allowHostPath",
    );
    let w = ws(&TUNING.replace(
        "input: {urls: ['https://example.com/data.parquet']}",
        "input: {volumeSource: {hostPath: {path: /var/lib/kubelet}}}",
    ));
    assert_rejected(
        w,
        "tuning.input.volumeSource.hostPath",
        "policy.allowHostPath",
    );
    let w = ws(&TUNING.replace(
        "output: {image: 'registry.example.com/a:1', imagePushSecret: push}",
        "output: {volumeSource: {hostPath: {path: /root}}}",
    ));
    assert_rejected(
        w,
        "tuning.output.volumeSource.hostPath",
        "policy.allowHostPath",
    );
}

#[test]
fn privileged_templates_are_refused_unless_the_policy_allows_them() {
    let message = "is not allowed: it gives the pod control of its node; remove it, or ask the \
                   cluster admin to set the chart value policy.allowPrivileged";
    let privileged = template_with("", "{privileged: true}");
    assert_rejected(
        privileged.clone(),
        "inference.template.spec.containers[0].securityContext.privileged",
        message,
    );
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_rejected(
            template_with(&format!("{host}: true"), ""),
            &format!("inference.template.spec.{host}"),
            message,
        );
    }
    assert_rejected(
        template_with(
            "",
            "{capabilities: {add: [NET_BIND_SERVICE, CAP_SYS_ADMIN]}}",
        ),
        "inference.template.spec.containers[0].securityContext.capabilities.add[1]",
        "adding CAP_SYS_ADMIN (beyond the Pod Security Standards' baseline)",
    );
    assert_eq!(
        errors_of(template_with(
            "",
            "{capabilities: {add: [NET_BIND_SERVICE, CHOWN]}}"
        )),
        vec![],
        "baseline capabilities are fine"
    );
    let init = ws(&format!(
        "{TEMPLATE}      initContainers:\n        - name: setup\n          image: busybox\n          securityContext: {{privileged: true}}\n"
    ));
    assert_rejected(
        init,
        "inference.template.spec.initContainers[0].securityContext.privileged",
        message,
    );
    let allowed = with_policy(PodPolicy {
        allow_privileged: true,
        ..PodPolicy::default()
    });
    assert!(errors_under(&privileged, &allowed).is_empty());
}
