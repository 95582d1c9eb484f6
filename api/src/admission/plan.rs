//! The planning stage: what a (defaulted, admitted) workspace runs, on which node shape, in
//! which precision, with how many GPUs per node. The controller plans each stored workspace
//! with [`plan`]; [`super::admit`] plans a workspace being admitted with the same function.

use std::sync::Arc;

use kaito_presets::sizing::{self, Mode, RuntimeParams};
use kaito_presets::{Cloud, GpuShape, Plan, Preset};

use super::{AdmissionConfig, bypasses_resource_checks, hub_preset, sizing_mode};
use crate::types::Workspace;

/// What a workspace asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    /// Serve a model.
    Inference,
    /// Fine-tune a model.
    Tuning,
}

/// Why a spec cannot be planned. Every message says what to change; these wait for a change
/// of the spec instead of being retried.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// Neither or both of `inference` and `tuning`.
    #[error("set exactly one of `inference` and `tuning`")]
    NoWorkload,
    /// Neither a preset nor a template.
    #[error("set `{0}.preset.name` (or `inference.template`)")]
    NoPreset(&'static str),
    /// The preset is not in the catalog.
    #[error("preset {name:?} is not in the catalog{hint}")]
    UnknownPreset {
        /// What was asked.
        name: String,
        /// ", did you mean ...".
        hint: String,
    },
    /// `resource.instanceType` is unset.
    #[error("set `resource.instanceType` to a GPU instance type of {cloud}, e.g. {example}")]
    NoInstanceType {
        /// The controller's cloud.
        cloud: Cloud,
        /// A GPU size of that cloud.
        example: &'static str,
    },
    /// The instance type is not in the cloud's SKU table.
    #[error(
        "instance type {name:?} is not a known {cloud} GPU size; choose one from the SKU \
         catalog (`kubectl kaito models describe <preset>` lists the sizes that fit)"
    )]
    UnknownSku {
        /// What was asked.
        name: String,
        /// The controller's cloud (`--cloud`, KAITO_CLOUD).
        cloud: Cloud,
    },
    /// `resource.count` is below 1.
    #[error("`resource.count` must be at least 1, is {0}")]
    BadCount(i32),
    /// Sizing says the model does not fit (and `kaito.sh/bypass-resource-checks` is not set).
    #[error("{0}")]
    DoesNotFit(String),
    /// The shared sizing code rejected the spec.
    #[error("{0}")]
    Sizing(String),
    /// `tuning.method` is not lora or qlora.
    #[error("`tuning.method` must be lora or qlora, is {0:?}")]
    BadMethod(String),
    /// `tuning.method` is unset (the webhook rejects that too; nothing assumes a method).
    #[error("set `tuning.method` to lora or qlora")]
    NoMethod,
}

/// The plan of one workspace.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkspacePlan {
    /// Inference or tuning.
    pub kind: WorkloadKind,
    /// The preset, unless a pod template is served.
    pub preset: Option<Arc<Preset>>,
    /// Sizing of the preset on the shape (None for templates).
    pub sizing: Option<Plan>,
    /// Nodes (and serving replicas).
    pub node_count: i32,
    /// GPUs each pod requests: all the GPUs of its node (0 on a CPU-only size).
    pub gpus_per_node: u32,
    /// The VM size (may be empty for bring-your-own nodes).
    pub instance_type: String,
    /// The node shape planned on: the size's catalog entry, or the bring-your-own nodes'
    /// labels. It picks the runtime image (`{computeCapability}`) and says whether the
    /// workload runs on a CPU.
    pub shape: GpuShape,
}

impl WorkspacePlan {
    /// Whether the nodes have no GPU: the model is served on their CPU.
    pub fn cpu_only(&self) -> bool {
        self.shape.is_cpu_only()
    }
}

/// The GPU shape of `instance_type` in `cfg`'s SKU catalog for its cloud.
pub fn sku_shape(cfg: &AdmissionConfig, instance_type: &str) -> Option<GpuShape> {
    cfg.skus.get(cfg.cloud, instance_type).map(|s| s.shape())
}

/// A GPU size of `cloud` for messages.
fn example_size(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Azure => "Standard_NC24ads_A100_v4",
        Cloud::Aws => "g5.xlarge",
    }
}

/// The workload kind and sizing mode of `ws`.
fn kind_and_mode(ws: &Workspace) -> Result<(WorkloadKind, Mode), PlanError> {
    match (&ws.inference, &ws.tuning) {
        (Some(_), None) => Ok((WorkloadKind::Inference, Mode::Serve)),
        (None, Some(t)) => match t.method.as_deref() {
            None => Err(PlanError::NoMethod),
            Some(m) => sizing_mode(ws)
                .map(|mode| (WorkloadKind::Tuning, mode))
                .ok_or_else(|| PlanError::BadMethod(m.into())),
        },
        _ => Err(PlanError::NoWorkload),
    }
}

/// The preset `ws` names, owned by the plan: a catalog entry, or the model a Hugging Face id
/// resolved to, from the facts the webhook pinned in the workspace's annotations
/// (`kaito.sh/model-revision`, `kaito.sh/model-facts`; the hub is not asked again).
fn resolve_preset(
    ws: &Workspace,
    cfg: &AdmissionConfig,
    name: &str,
) -> Result<Arc<Preset>, PlanError> {
    match hub_preset(ws, &cfg.presets) {
        Some(Ok(p)) => return Ok(Arc::new(p)),
        Some(Err(why)) => return Err(PlanError::Sizing(format!("inference.preset.name: {why}"))),
        None => {}
    }
    cfg.presets
        .get(name)
        .map(|p| Arc::new(p.clone()))
        .ok_or_else(|| {
            let s = cfg.presets.suggestions(name, 3);
            PlanError::UnknownPreset {
                name: name.into(),
                hint: if s.is_empty() {
                    String::new()
                } else {
                    format!("; did you mean {}?", s.join(", "))
                },
            }
        })
}

/// Plans `ws` with the installation's settings `cfg`. `observed_shape` is the shape of
/// bring-your-own nodes when known; otherwise the shape comes from `resource.instanceType` in
/// the SKU table of `cfg.cloud`.
pub fn plan(
    ws: &Workspace,
    cfg: &AdmissionConfig,
    observed_shape: Option<&GpuShape>,
) -> Result<WorkspacePlan, PlanError> {
    let (kind, mode) = kind_and_mode(ws)?;
    let node_count = ws.resource.count.unwrap_or(1);
    if node_count < 1 {
        return Err(PlanError::BadCount(node_count));
    }
    let cloud = cfg.cloud;
    let instance_type = ws.resource.instance_type.clone().unwrap_or_default();
    let shape = match observed_shape {
        Some(s) => s.clone(),
        None if instance_type.is_empty() => {
            return Err(PlanError::NoInstanceType {
                cloud,
                example: example_size(cloud),
            });
        }
        None => sku_shape(cfg, &instance_type).ok_or_else(|| PlanError::UnknownSku {
            name: instance_type.clone(),
            cloud,
        })?,
    };
    let template = ws.inference.as_ref().and_then(|i| i.template.as_ref());
    let Some(preset_spec) = ws.preset() else {
        if template.is_some() {
            return Ok(WorkspacePlan {
                kind,
                preset: None,
                sizing: None,
                node_count,
                gpus_per_node: shape.gpus,
                instance_type,
                shape,
            });
        }
        return Err(PlanError::NoPreset(match kind {
            WorkloadKind::Inference => "inference",
            WorkloadKind::Tuning => "tuning",
        }));
    };
    let preset = resolve_preset(ws, cfg, &preset_spec.name)?;
    let sizing = sizing::plan(&preset, mode, RuntimeParams::default(), &shape);
    // A size the user insisted on (kaito.sh/bypass-resource-checks, which the webhook admitted
    // with a warning) is planned as asked.
    if !sizing.fits() && !bypasses_resource_checks(ws) {
        let why: Vec<String> = sizing.problems.iter().map(ToString::to_string).collect();
        return Err(PlanError::DoesNotFit(why.join("; ")));
    }
    Ok(WorkspacePlan {
        kind,
        preset: Some(preset),
        gpus_per_node: sizing.gpus_per_node,
        sizing: Some(sizing),
        node_count,
        instance_type,
        shape,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaito_presets::Provisioner;

    fn ws(yaml: &str) -> Workspace {
        serde_yaml::from_str(yaml).expect("test YAML is a Workspace")
    }

    fn on(cloud: Cloud) -> AdmissionConfig {
        AdmissionConfig::new(cloud, Provisioner::Byo)
    }

    #[test]
    fn a_hub_id_plans_from_the_facts_the_webhook_recorded() {
        use kaito_presets::hub_model::{RepoFile, facts_from_config};
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let config = r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 4096,
            "num_attention_heads": 32, "num_key_value_heads": 8, "num_hidden_layers": 32,
            "max_position_embeddings": 131072}"#;
        let files = [RepoFile {
            name: "model.safetensors".into(),
            size: 16_060_556_376,
        }];
        let facts = facts_from_config("org/llama", commit, config, &files, false).expect("facts");
        let text = "metadata: {name: w, namespace: n}\nresource: {instanceType: Standard_NC24ads_A100_v4, labelSelector: {matchLabels: {a: b}}}\ninference: {preset: {name: org/llama}}";
        let mut w = ws(text);
        // Without the facts the webhook records, there is nothing to plan from.
        let err = plan(&w, &on(Cloud::Azure), None).expect_err("no facts");
        assert!(err.to_string().contains("kaito.sh/model-facts"), "{err}");
        super::super::record_hub_model(&mut w, &facts);
        let p = plan(&w, &on(Cloud::Azure), None).expect("plans");
        let preset = p.preset.clone().expect("a preset");
        assert_eq!(preset.huggingface.repo, "org/llama");
        assert_eq!(preset.huggingface.revision, commit);
        assert_eq!(
            p.sizing.as_ref().and_then(|s| s.max_model_len),
            Some(131_072)
        );
        // Planning again gives the same model (the plan owns it; nothing is kept per model).
        let again = plan(&w, &on(Cloud::Azure), None).expect("plans");
        assert_eq!(Some(preset), again.preset);
    }

    #[test]
    fn seeds_plan_on_their_sku() {
        let w = ws(include_str!(
            "../../../examples/inference/kaito_workspace_phi_3.yaml"
        ));
        let p = plan(&w, &on(Cloud::Azure), None).expect("plans");
        assert_eq!(p.kind, WorkloadKind::Inference);
        assert_eq!(p.node_count, 1);
        assert_eq!(p.gpus_per_node, 1);
        assert_eq!(p.sizing.as_ref().map(|s| s.dtype.as_str()), Some("f16"));
        let t = ws(include_str!(
            "../../../examples/fine-tuning/kaito_workspace_tuning_phi_3.yaml"
        ));
        let p = plan(&t, &on(Cloud::Azure), None).expect("plans");
        assert_eq!(p.kind, WorkloadKind::Tuning);
    }

    #[test]
    fn bad_specs_say_what_to_change() {
        let table: [(&str, &str); 6] = [
            (
                "resource: {instanceType: Standard_Nope_v9}\ninference: {preset: {name: phi-3-mini-4k-instruct}}",
                "not a known azure GPU size",
            ),
            (
                "resource: {instanceType: Standard_NC6s_v3}\ninference: {preset: {name: phi-3-mini-4k-instruc}}",
                "did you mean phi-3-mini-4k-instruct",
            ),
            (
                "resource: {instanceType: Standard_D4s_v3}\ninference: {preset: {name: phi-3-mini-4k-instruct}}",
                "serving phi-3-mini-4k-instruct on the CPU needs",
            ),
            (
                "resource: {instanceType: Standard_NC6s_v3, count: 0}\ninference: {preset: {name: phi-3-mini-4k-instruct}}",
                "at least 1",
            ),
            ("resource: {instanceType: Standard_NC6s_v3}", "exactly one"),
            (
                "resource: {instanceType: Standard_NC6s_v3}\ntuning: {method: full, preset: {name: phi-3-mini-4k-instruct}}",
                "lora or qlora",
            ),
        ];
        for (spec, want) in table {
            let w = ws(&format!("metadata: {{name: w, namespace: n}}\n{spec}"));
            let err = plan(&w, &on(Cloud::Azure), None)
                .expect_err(spec)
                .to_string();
            assert!(err.contains(want), "{spec}: {err}");
        }
    }

    #[test]
    fn the_cloud_picks_the_sku_table() {
        // What the webhook admits with --cloud=aws (an AWS instance type) the controller
        // must plan with the same cloud; it used to size everything on the Azure table and
        // report the AWS size as unknown.
        let w = ws(
            "metadata: {name: w, namespace: n}\nresource: {instanceType: g5.xlarge, labelSelector: {matchLabels: {a: b}}}\ninference: {preset: {name: phi-3-mini-4k-instruct}}",
        );
        let p = plan(&w, &on(Cloud::Aws), None).expect("g5.xlarge is an AWS GPU size");
        assert_eq!(p.instance_type, "g5.xlarge");
        assert_eq!(p.gpus_per_node, 1);
        let err = plan(&w, &on(Cloud::Azure), None).expect_err("not an Azure size");
        assert_eq!(
            err,
            PlanError::UnknownSku {
                name: "g5.xlarge".into(),
                cloud: Cloud::Azure
            }
        );
        assert!(
            err.to_string().contains("not a known azure GPU size"),
            "{err}"
        );
        // And the other way round: an Azure size is unknown on AWS.
        let azure = ws(include_str!(
            "../../../examples/inference/kaito_workspace_phi_3.yaml"
        ));
        let err = plan(&azure, &on(Cloud::Aws), None).expect_err("not an AWS size");
        assert!(
            err.to_string().contains("not a known aws GPU size"),
            "{err}"
        );
        let unset = ws(
            "metadata: {name: w, namespace: n}\nresource: {labelSelector: {matchLabels: {a: b}}}\ninference: {preset: {name: phi-3-mini-4k-instruct}}",
        );
        let err = plan(&unset, &on(Cloud::Aws), None).expect_err("no instance type");
        assert!(err.to_string().contains("of aws, e.g. g5.xlarge"), "{err}");
    }

    #[test]
    fn a_cpu_only_size_plans_a_cpu_workload_and_refuses_tuning() {
        let w = ws(
            "metadata: {name: w, namespace: n}\nresource: {instanceType: Standard_D4s_v3, labelSelector: {matchLabels: {a: b}}}\ninference: {preset: {name: smollm2-135m-instruct}}",
        );
        let p = plan(&w, &on(Cloud::Azure), None).expect("plans");
        assert!(p.cpu_only());
        assert_eq!(p.gpus_per_node, 0);
        assert_eq!(p.sizing.as_ref().map(|s| s.dtype.as_str()), Some("f32"));
        let t = ws(
            "metadata: {name: t, namespace: n}\nresource: {instanceType: Standard_D16s_v3}\ntuning: {method: qlora, preset: {name: phi-3-mini-4k-instruct}}",
        );
        let err = plan(&t, &on(Cloud::Azure), None).expect_err("tuning needs a GPU");
        assert!(err.to_string().contains("needs a GPU"), "{err}");
    }

    #[test]
    fn byo_shape_overrides_the_sku_and_picks_bf16_on_ampere() {
        let w = ws(
            "metadata: {name: w, namespace: n}\nresource: {labelSelector: {matchLabels: {a: b}}}\ninference: {preset: {name: phi-3-mini-4k-instruct}}",
        );
        assert!(matches!(
            plan(&w, &on(Cloud::Azure), None),
            Err(PlanError::NoInstanceType { .. })
        ));
        let shape =
            sku_shape(&on(Cloud::Azure), "Standard_NC24ads_A100_v4").expect("catalog has A100");
        let p = plan(&w, &on(Cloud::Azure), Some(&shape)).expect("plans");
        assert_eq!(p.sizing.map(|s| s.dtype.as_str()), Some("bf16"));
    }
}
