//! The architectures the preset catalog says the runtime loads (`runtimeArchitectures`), each
//! served for real: a tiny random-weight model of that shape is written, `kaito-runtime` loads
//! it through mistral.rs and answers `/chat` and `/v1/chat/completions` with it. And the
//! architectures mistral.rs 0.8.1 names but the catalog leaves out, shown still failing, so the
//! day a mistral.rs upgrade makes one work this test says to list it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{SEED, Server, greedy_chat, scratch};
use kaito_presets::PresetCatalog;
use kaito_runtime::testmodel::{self, Arch, ModelSpec};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(300);

/// The catalog lists exactly the architectures served here: one the runtime cannot serve would
/// be admitted and then fail on the node; one it serves but the catalog omits would be refused
/// at admission for no reason.
#[test]
fn catalog_runtime_architectures_are_exactly_those_served_here() {
    let listed: BTreeSet<&str> = PresetCatalog::builtin()
        .runtime_architectures()
        .iter()
        .map(String::as_str)
        .collect();
    let served: BTreeSet<&str> = Arch::SERVED.iter().map(|a| a.hf_architecture()).collect();
    assert_eq!(listed, served);
    for preset in PresetCatalog::builtin().iter() {
        assert_eq!(
            preset.runtime_supported,
            served.contains(preset.architecture.as_str()),
            "{}",
            preset.name
        );
    }
}

async fn post(client: &reqwest::Client, url: String, body: &Value) -> (u16, Value) {
    let r = client.post(url).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Starts one `kaito-runtime` per architecture on its tiny model (the loads overlap).
fn start_all(archs: &[Arch]) -> Vec<(Arch, Server)> {
    archs
        .iter()
        .map(|&arch| {
            let model = scratch(&format!("arch-{arch:?}")).join("model");
            testmodel::write_model(&model, &ModelSpec::tiny(arch, SEED)).unwrap();
            let config: Value =
                serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap())
                    .unwrap();
            assert_eq!(config["architectures"][0], arch.hf_architecture());
            (arch, Server::start(&model, &[], &[]))
        })
        .collect()
}

/// Every served architecture loads and generates: a greedy `/chat` of six new tokens and an
/// OpenAI chat completion of four.
#[tokio::test]
async fn every_runtime_architecture_serves_a_tiny_model() {
    let client = reqwest::Client::new();
    for (arch, mut server) in start_all(&Arch::SERVED) {
        server.wait_ready(READY).await;
        let (status, body) = post(&client, server.url("/chat"), &greedy_chat("Hello", 6)).await;
        assert_eq!(status, 200, "{arch:?}: {body}");
        let text = body["Result"].as_str().unwrap_or_default();
        assert_eq!(text.chars().count(), 6, "{arch:?}: {body}");

        let request = json!({
            "model": "tiny",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4,
            "temperature": 0.0
        });
        let (status, body) = post(&client, server.url("/v1/chat/completions"), &request).await;
        assert_eq!(status, 200, "{arch:?}: {body}");
        assert_eq!(body["usage"]["completion_tokens"], 4, "{arch:?}: {body}");
        assert_eq!(
            body["choices"][0]["finish_reason"], "length",
            "{arch:?}: {body}"
        );
    }
}

/// The architectures left out of the catalog (its comments give the reasons) load and report
/// ready, but fail on the first token in mistral.rs 0.8.1, each with the error the catalog
/// cites. A Workspace of one would turn Ready and then fail every request, which is why they
/// are not listed. When this test fails because one now answers 200, list it.
#[tokio::test]
async fn left_out_architectures_still_fail_on_the_first_token() {
    let left_out: Vec<Arch> = Arch::ALL
        .into_iter()
        .filter(|a| !Arch::SERVED.contains(a))
        .collect();
    assert_eq!(
        left_out,
        [Arch::Mixtral, Arch::Qwen3Moe, Arch::DeepseekV3],
        "a new generated architecture needs its expected failure here"
    );
    let client = reqwest::Client::new();
    for (arch, mut server) in start_all(&left_out) {
        server.wait_ready(READY).await;
        let (status, body) = post(&client, server.url("/chat"), &greedy_chat("Hello", 2)).await;
        let expected = match arch {
            // f32 routing weights times 16-bit hidden states.
            Arch::Mixtral => "dtype mismatch",
            // Per-expert weights on a CPU become placeholder layers.
            Arch::Qwen3Moe => "DummyLayer",
            // Value heads narrower than query/key heads in the CPU attention kernel.
            _ => "shape mismatch",
        };
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            status >= 500 && message.contains(expected),
            "{arch:?} answered {status}: {body}"
        );
    }
}
