//! `kubectl kaito models describe org/model[@revision]`: the plugin binary resolving a Hugging
//! Face id through the test harness's local hub (the hub's HTTP protocol on loopback), as the
//! webhook does.

use std::process::Command;

use kaito_e2e::hub::{Hub, HubRepo};

const TOKEN: &str = "hf_plugin_token";

fn repo(dir: &std::path::Path, id: &str, architecture: &str, token: Option<&str>) -> HubRepo {
    let sub = dir.join(id.replace('/', "--"));
    std::fs::create_dir_all(&sub).expect("dir");
    let config = serde_json::json!({"architectures": [architecture], "hidden_size": 64,
        "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
        "max_position_embeddings": 2048});
    std::fs::write(sub.join("config.json"), config.to_string()).expect("config");
    std::fs::write(sub.join("model.safetensors"), vec![0u8; 1 << 20]).expect("weights");
    HubRepo::from_dir(id, &sub, token).expect("repo")
}

/// Runs `kubectl-kaito models describe NAME` against `endpoint`; (success, stdout, stderr).
fn describe(endpoint: &str, name: &str, token: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-kaito"));
    cmd.args(["models", "describe", name, "--hub-timeout", "5"])
        .env("HF_ENDPOINT", endpoint)
        .env_remove("HF_TOKEN");
    if let Some(t) = token {
        cmd.env("HF_TOKEN", t);
    }
    let out = cmd.output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_hub_id_is_described_with_its_commit_and_the_sizes_that_fit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(vec![
        repo(dir.path(), "test-org/tiny-llama", "LlamaForCausalLM", None),
        repo(
            dir.path(),
            "test-org/tiny-falcon",
            "FalconForCausalLM",
            None,
        ),
        repo(
            dir.path(),
            "gated-org/tiny",
            "LlamaForCausalLM",
            Some(TOKEN),
        ),
    ])
    .expect("hub");
    let commit = hub.repo("test-org/tiny-llama").expect("repo").commit;

    let (ok, out, err) = describe(&hub.endpoint(), "test-org/tiny-llama", None);
    assert!(ok, "{err}");
    assert!(out.contains("Architecture:  LlamaForCausalLM"), "{out}");
    assert!(out.contains("Context:       2048 tokens"), "{out}");
    assert!(out.contains(&format!("commit {commit}")), "{out}");
    assert!(out.contains("GPU sizes fit serving"), "{out}");

    let (ok, out, _) = describe(
        &hub.endpoint(),
        &format!("test-org/tiny-llama@{commit}"),
        None,
    );
    assert!(ok && out.contains(&format!("commit {commit}")), "{out}");

    let (ok, out, _) = describe(&hub.endpoint(), "test-org/tiny-falcon", None);
    assert!(ok, "{out}");
    assert!(
        out.contains("Admission refuses it") && out.contains("LlamaForCausalLM"),
        "{out}"
    );

    let (ok, _, err) = describe(&hub.endpoint(), "gated-org/tiny", None);
    assert!(!ok && err.contains("gated or private"), "{err}");
    let (ok, out, err) = describe(&hub.endpoint(), "gated-org/tiny", Some(TOKEN));
    assert!(ok, "{err}");
    assert!(out.contains("Gated:         yes"), "{out}");

    let (ok, _, err) = describe(&hub.endpoint(), "test-org/missing", None);
    assert!(
        !ok && err.contains("is not on the Hugging Face hub"),
        "{err}"
    );
    let (ok, _, err) = describe(&hub.endpoint(), "a/b/c", None);
    assert!(!ok && err.contains("org/model@revision"), "{err}");
}
