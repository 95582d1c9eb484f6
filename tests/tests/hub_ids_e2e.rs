//! A Hugging Face id as `inference.preset.name`, end to end on the local control plane: the
//! test's local hub ([`kaito_e2e::hub`], the hub's HTTP protocol) serves a tiny repository,
//! `kaito-webhook` (HF_ENDPOINT pointing at it) resolves the id on `kubectl apply`, pins the
//! commit in `kaito.sh/model-revision` and the facts in `kaito.sh/model-facts`, refuses an
//! architecture the runtime cannot load and a change of the pin; `kaito-controller` (byo, a kwok
//! GPU node) plans the workspace from the annotations and writes the serving StatefulSet with
//! `--model-repo`/`--model-revision` = the pinned commit.

use std::time::Duration;

use anyhow::{Context, Result};
use kaito_e2e::hub::{Hub, HubRepo};
use kaito_e2e::{ControllerProcess, GpuNode, WebhookProcess, unique_name, wait_for};
use serde_json::{Value, json};

/// A repository with a tiny Llama-shaped config.json for `architecture` and 1 MiB of weights.
fn repo(dir: &std::path::Path, id: &str, architecture: &str) -> Result<HubRepo> {
    let sub = dir.join(id.replace('/', "--"));
    std::fs::create_dir_all(&sub)?;
    let config = json!({"architectures": [architecture], "model_type": "llama",
        "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_hidden_layers": 2, "max_position_embeddings": 2048, "vocab_size": 256});
    std::fs::write(sub.join("config.json"), config.to_string())?;
    std::fs::write(sub.join("model.safetensors"), vec![0u8; 1 << 20])?;
    HubRepo::from_dir(id, &sub, None)
}

fn workspace(name: &str, preset: &str, label: &str) -> String {
    format!(
        "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata:\n  name: {name}\n\
         resource:\n  instanceType: Standard_NC6s_v3\n  labelSelector:\n    matchLabels:\n      \
         apps: {label}\ninference:\n  preset:\n    name: {preset}\n"
    )
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn hub_id_workspace_is_pinned_at_apply_and_served_at_the_pinned_commit() -> Result<()> {
    let cluster = kaito_e2e::running_cluster_with_crds()?;
    let ns = cluster.namespace("hub-ids")?;
    let label = unique_name("hub");
    let node = cluster.add_gpu_node(&GpuNode::for_apps("gpu", &label))?;

    let dir = tempfile::tempdir()?;
    let llama = repo(dir.path(), "test-org/tiny-llama", "LlamaForCausalLM")?;
    let commit = llama.commit.clone();
    let falcon = repo(dir.path(), "test-org/tiny-falcon", "FalconForCausalLM")?;
    let hub = Hub::start(vec![llama, falcon])?;
    let endpoint = hub.endpoint();
    let hook = WebhookProcess::start_with_env(cluster, &ns, "byo", &[("HF_ENDPOINT", &endpoint)])?;

    // kubectl apply: resolved, pinned, admitted.
    let name = "tiny";
    let apply = |yaml: String| cluster.kubectl_stdin(["-n", ns.name(), "apply", "-f", "-"], &yaml);
    let out = apply(workspace(name, "test-org/tiny-llama", &label))?;
    assert!(
        out.success(),
        "kubectl apply failed: {}\nwebhook log:\n{}",
        out.stderr,
        hook.log_tail()
    );
    let ws = ns.get_json(["workspace", name])?;
    let annotations = &ws["metadata"]["annotations"];
    assert_eq!(
        annotations["kaito.sh/model-revision"],
        commit.as_str(),
        "{ws:#}"
    );
    let facts: Value = serde_json::from_str(
        annotations["kaito.sh/model-facts"]
            .as_str()
            .context("facts recorded")?,
    )?;
    assert_eq!(facts["repo"], "test-org/tiny-llama");
    assert_eq!(facts["architecture"], "LlamaForCausalLM");
    assert_eq!(facts["weightsBytes"], 1 << 20);
    assert_eq!(facts["kvBytesPerToken"], 2 * 2 * 2 * 16 * 2);

    // The pin cannot be moved.
    let out = ns.kubectl([
        "annotate",
        "--overwrite",
        "workspace",
        name,
        "kaito.sh/model-revision=main",
    ])?;
    assert!(
        !out.success() && out.stderr.contains("kaito.sh/model-revision"),
        "{}",
        out.stderr
    );

    // An architecture the runtime cannot load: refused, with the list of those it can.
    let out = apply(workspace("falcon", "test-org/tiny-falcon", &label))?;
    assert!(!out.success(), "a Falcon model was admitted");
    assert!(
        out.stderr.contains("FalconForCausalLM") && out.stderr.contains("LlamaForCausalLM"),
        "{}",
        out.stderr
    );

    // The controller plans it from the annotations and serves the pinned commit.
    let ctl = ControllerProcess::start(&ns, "byo")?;
    let sts = wait_for(
        "the serving StatefulSet",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || Ok(ns.get_json(["statefulset", name]).ok()),
    )
    .with_context(|| ctl.log_tail())?;
    let args: Vec<String> =
        serde_json::from_value(sts["spec"]["template"]["spec"]["containers"][0]["args"].clone())?;
    let after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    assert_eq!(
        after("--model-repo").as_deref(),
        Some("test-org/tiny-llama"),
        "{args:?}"
    );
    assert_eq!(
        after("--model-revision").as_deref(),
        Some(commit.as_str()),
        "{args:?}"
    );
    let pod = wait_for(
        "the serving pod on the GPU node",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || Ok(ns.get_json(["pod", &format!("{name}-0")]).ok()),
    )?;
    assert_eq!(pod["spec"]["nodeName"], node.name());
    drop(ctl);
    drop(hook);
    Ok(())
}
