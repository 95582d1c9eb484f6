//! A Workspace whose `inference.preset.name` is a Hugging Face id (`org/model[@revision]`).
//!
//! The webhook resolves the id through the hub when the Workspace is created and records what
//! it found on it: [`ANNOTATION_MODEL_REVISION`] (the commit the revision resolved to, so a
//! later push to the repository does not change what runs) and [`ANNOTATION_MODEL_FACTS`]
//! (architecture, weight size, context length, KV bytes per token, gated). From then on every
//! component — the webhook's own defaulting and validation, the controller's plan and the
//! serving pod's `--model-repo`/`--model-revision` — reads the model from these annotations,
//! through [`workspace_preset`], and never asks the hub again. The annotations are immutable.

use std::borrow::Cow;

use kaito_presets::hub_model::{HubId, ModelFacts, is_hub_id};
use kaito_presets::{Preset, PresetCatalog};

use crate::types::Workspace;

/// Annotation the webhook writes: the commit a Hugging Face id's revision resolved to.
pub const ANNOTATION_MODEL_REVISION: &str = "kaito.sh/model-revision";
/// Annotation the webhook writes: the facts read from the hub ([`ModelFacts`] as JSON).
pub const ANNOTATION_MODEL_FACTS: &str = "kaito.sh/model-facts";

/// Records `facts` (resolved by the caller for the workspace's Hugging Face id) on `ws`.
pub fn record_hub_model(ws: &mut Workspace, facts: &ModelFacts) {
    let annotations = ws.metadata.annotations.get_or_insert_default();
    annotations.insert(ANNOTATION_MODEL_REVISION.into(), facts.revision.clone());
    annotations.insert(ANNOTATION_MODEL_FACTS.into(), facts.to_json());
}

/// The Hugging Face id `ws` serves, if its `inference.preset.name` is one (parsed or not).
pub fn hub_model_name(ws: &Workspace) -> Option<&str> {
    ws.inference
        .as_ref()
        .and_then(|i| i.preset.as_ref())
        .map(|p| p.name.as_str())
        .filter(|n| is_hub_id(n))
}

/// The preset of a Hugging Face id workspace, from its recorded facts; the error says what is
/// wrong, for `inference.preset.name`.
pub fn hub_preset(ws: &Workspace, catalog: &PresetCatalog) -> Option<Result<Preset, String>> {
    let name = hub_model_name(ws)?;
    Some(hub_preset_of(ws, name, catalog))
}

fn hub_preset_of(ws: &Workspace, name: &str, catalog: &PresetCatalog) -> Result<Preset, String> {
    let id = HubId::parse(name).map_err(|e| e.to_string())?;
    let Some(text) = ws.annotation(ANNOTATION_MODEL_FACTS) else {
        return Err(format!(
            "{name} is a Hugging Face id, which the webhook resolves when the workspace is \
             created and records in the {ANNOTATION_MODEL_FACTS} annotation; it is missing \
             (is the kaito mutating webhook installed?)"
        ));
    };
    let facts = ModelFacts::from_json(text)
        .map_err(|e| format!("the {ANNOTATION_MODEL_FACTS} annotation is not usable: {e}"))?;
    if facts.repo != id.repo {
        return Err(format!(
            "the {ANNOTATION_MODEL_FACTS} annotation is for {}, not {}",
            facts.repo, id.repo
        ));
    }
    if ws.annotation(ANNOTATION_MODEL_REVISION) != Some(facts.revision.as_str()) {
        return Err(format!(
            "the {ANNOTATION_MODEL_REVISION} annotation must be {} (the revision in \
             {ANNOTATION_MODEL_FACTS})",
            facts.revision
        ));
    }
    if let Some(rev) = id.revision.as_deref().filter(|r| r.len() == 40)
        && !rev.eq_ignore_ascii_case(&facts.revision)
    {
        return Err(format!(
            "{name} names commit {rev} but the recorded facts are for commit {}",
            facts.revision
        ));
    }
    Ok(facts.preset(name, catalog.runtime_architectures()))
}

/// The preset a workspace names: its catalog entry, or for a Hugging Face id the preset made
/// from the recorded facts. `None` when there is no preset, it is unknown, or the facts are
/// missing or unusable (validation says why).
pub fn workspace_preset<'a>(ws: &Workspace, catalog: &'a PresetCatalog) -> Option<Cow<'a, Preset>> {
    match hub_preset(ws, catalog) {
        Some(found) => found.ok().map(Cow::Owned),
        None => ws
            .preset()
            .and_then(|p| catalog.get(&p.name))
            .map(Cow::Borrowed),
    }
}

#[cfg(test)]
mod tests {
    use kaito_presets::hub_model::{RepoFile, facts_from_config};
    use kaito_presets::{Cloud, Provisioner};

    use super::*;
    use crate::admission::{AdmissionConfig, apply_defaults, plan, validate};

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn cfg() -> AdmissionConfig {
        AdmissionConfig::new(Cloud::Azure, Provisioner::Aks)
    }

    /// Llama-3.1-8B's config.json shape and weight size, as the hub would give them.
    fn facts(architecture: &str, gated: bool) -> ModelFacts {
        let config = format!(
            r#"{{"architectures": ["{architecture}"], "hidden_size": 4096,
            "num_attention_heads": 32, "num_key_value_heads": 8, "num_hidden_layers": 32,
            "max_position_embeddings": 131072}}"#
        );
        let weights = PresetCatalog::builtin()
            .get("llama-3.1-8b-instruct")
            .map(|p| p.weights.as_bytes())
            .unwrap_or(1);
        let files = [RepoFile {
            name: "model.safetensors".into(),
            size: weights,
        }];
        facts_from_config("org/llama", COMMIT, &config, &files, gated).expect("facts")
    }

    fn workspace(name: &str, extra: &str) -> Workspace {
        serde_yaml::from_str(&format!(
            "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata: {{name: w, namespace: ns}}\n\
             resource: {{}}\ninference:\n  preset:\n    name: {name}\n{extra}"
        ))
        .expect("a workspace")
    }

    /// What the webhook does on create: record the facts, default, validate.
    fn admit(mut ws: Workspace, facts: Option<&ModelFacts>) -> (Workspace, Vec<String>) {
        if let Some(f) = facts {
            record_hub_model(&mut ws, f);
        }
        apply_defaults(&mut ws, &cfg());
        let v = validate(None, &ws, &cfg());
        let errors = v.errors.iter().map(ToString::to_string).collect();
        (ws, errors)
    }

    #[test]
    fn a_hub_id_is_sized_like_the_catalog_preset_of_the_same_model() {
        let (hub, errors) = admit(
            workspace("org/llama", ""),
            Some(&facts("LlamaForCausalLM", false)),
        );
        assert!(errors.is_empty(), "{errors:?}");
        let (catalog, errors) = admit(
            workspace(
                "llama-3.1-8b-instruct",
                "    presetOptions: {modelAccessSecret: hf}\n",
            ),
            None,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert!(hub.resource.instance_type.is_some());
        assert_eq!(hub.resource.instance_type, catalog.resource.instance_type);
        assert_eq!(hub.annotation(ANNOTATION_MODEL_REVISION), Some(COMMIT));
        let sizing = |w: &Workspace| plan(w, &cfg(), None).expect("plans").sizing;
        let hub_plan = sizing(&hub).expect("sized");
        assert!(hub_plan.fits(), "{:?}", hub_plan.problems);
        assert_eq!(
            Some(hub_plan.max_model_len),
            sizing(&catalog).map(|p| p.max_model_len)
        );
    }

    #[test]
    fn a_hub_id_without_recorded_facts_is_refused() {
        let (_, errors) = admit(workspace("org/llama", ""), None);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("inference.preset.name:")
                    && e.contains(ANNOTATION_MODEL_FACTS)),
            "{errors:?}"
        );
        // Forged facts: the revision annotation does not match, or another repository.
        let mut ws = workspace("org/llama", "");
        record_hub_model(&mut ws, &facts("LlamaForCausalLM", false));
        ws.metadata
            .annotations
            .get_or_insert_default()
            .insert(ANNOTATION_MODEL_REVISION.into(), "main".into());
        let (_, errors) = admit(ws, None);
        assert!(
            errors.iter().any(|e| e.contains(ANNOTATION_MODEL_REVISION)),
            "{errors:?}"
        );
        let (_, errors) = admit(
            workspace("other/model", ""),
            Some(&facts("LlamaForCausalLM", false)),
        );
        assert!(
            errors.iter().any(|e| e.contains("not other/model")),
            "{errors:?}"
        );
        let (_, errors) = admit(workspace("org/llama@v1", ""), None);
        assert!(!errors.is_empty());
        let (_, errors) = admit(workspace("org/x/y", ""), None);
        assert!(
            errors.iter().any(
                |e| e.starts_with("inference.preset.name:") && e.contains("org/model@revision")
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn an_architecture_the_runtime_cannot_load_is_refused_with_the_list() {
        let (_, errors) = admit(
            workspace("org/llama", ""),
            Some(&facts("FalconForCausalLM", false)),
        );
        let runtime = PresetCatalog::builtin().runtime_architectures().join(", ");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("inference.preset.name:")
                    && e.contains("FalconForCausalLM")
                    && e.contains(&runtime)),
            "{errors:?}"
        );
    }

    #[test]
    fn a_gated_repository_needs_the_secret() {
        let (_, errors) = admit(
            workspace("org/llama", ""),
            Some(&facts("LlamaForCausalLM", true)),
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("inference.preset.presetOptions.modelAccessSecret")),
            "{errors:?}"
        );
        let (_, errors) = admit(
            workspace("org/llama", "    presetOptions: {modelAccessSecret: hf}\n"),
            Some(&facts("LlamaForCausalLM", true)),
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn the_pinned_model_cannot_change_on_update() {
        let (old, errors) = admit(
            workspace("org/llama", ""),
            Some(&facts("LlamaForCausalLM", false)),
        );
        assert!(errors.is_empty(), "{errors:?}");
        let mut new = old.clone();
        let mut moved = facts("LlamaForCausalLM", false);
        moved.revision = "1111111111111111111111111111111111111111".into();
        record_hub_model(&mut new, &moved);
        let v = validate(Some(&old), &new, &cfg());
        assert!(
            v.errors
                .iter()
                .any(|e| e.field == format!("metadata.annotations[{ANNOTATION_MODEL_REVISION}]")),
            "{:?}",
            v.errors
        );
        assert!(validate(Some(&old), &old, &cfg()).is_allowed());
    }

    #[test]
    fn a_hub_id_cannot_be_tuned() {
        let ws: Workspace = serde_yaml::from_str(
            "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata: {name: w}\n\
             resource: {instanceType: Standard_NC24ads_A100_v4}\n\
             tuning: {method: qlora, preset: {name: org/llama}, input: {urls: [\"https://e.com/d.parquet\"]},\n\
               output: {volumeSource: {emptyDir: {}}}}",
        )
        .expect("a workspace");
        let v = validate(None, &ws, &cfg());
        assert!(
            v.errors
                .iter()
                .any(|e| e.field == "tuning.preset.name" && e.message.contains("Hugging Face id")),
            "{:?}",
            v.errors
        );
    }
}
