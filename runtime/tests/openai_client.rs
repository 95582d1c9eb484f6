//! The official `openai` Python client against `kaito-runtime` (see `openai_client.py`).
//!
//! Python comes from `KAITO_PYTHON` (default `python3`). When it cannot import `openai` the test
//! is skipped with a message, unless `KAITO_REQUIRE_OPENAI=1` (set by `scripts/test.sh`, which
//! installs the client in a venv first), in which case it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Server, scratch, tiny_model};
use kaito_runtime::testmodel::Arch;

#[tokio::test]
async fn official_openai_python_client() {
    let python = std::env::var("KAITO_PYTHON").unwrap_or_else(|_| "python3".into());
    let required = std::env::var("KAITO_REQUIRE_OPENAI").is_ok_and(|v| v == "1");
    let probe = Command::new(&python)
        .args(["-c", "import openai; print(openai.__version__)"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {
            eprintln!(
                "using openai {}",
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        other => {
            let why = match other {
                Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            assert!(
                !required,
                "KAITO_REQUIRE_OPENAI=1 but `{python}` cannot import openai: {why}"
            );
            eprintln!(
                "SKIPPED official_openai_python_client: `{python}` cannot import openai \
                 (pip install openai, or run scripts/test.sh): {why}"
            );
            return;
        }
    }
    let dir = scratch("openai");
    let (model, _) = tiny_model(&dir, Arch::Llama);
    let mut server = Server::start(&model, &[], &[]);
    server.wait_ready(Duration::from_secs(180)).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let base = server.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .args([script, &base, "tiny"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openai client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
}
