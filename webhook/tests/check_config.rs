//! `kaito-webhook --check-config`: flags and environment are parsed and validated without
//! binding or contacting anything (the chart-level check is `tests/tests/chart_binaries.rs`).

use std::process::{Command, Output};

use serde_json::Value;

fn webhook(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kaito-webhook"))
        .env_clear()
        .envs(env.iter().copied())
        .arg("--check-config")
        .args(args)
        .output()
        .expect("kaito-webhook runs")
}

fn refused(out: &Output, want: &str) {
    assert!(!out.status.success(), "accepted, wanted {want:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(want), "{err}");
}

#[test]
fn prints_the_effective_configuration() {
    let out = webhook(
        &["--log-format=json", "--cert-secret=kaito-webhook-cert"],
        &[
            ("KAITO_CLOUD", "aws"),
            ("KAITO_PROVISIONER", "karpenter"),
            ("POD_NAMESPACE", "kaito-x"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(c["cloud"], "aws");
    assert_eq!(c["provisioner"], "karpenter");
    assert_eq!(c["namespace"], "kaito-x");
    assert_eq!(c["tlsMode"], "secret");
    assert_eq!(c["logFormat"], "json");
    assert!(c["gpuSizes"].as_u64().is_some_and(|n| n > 0), "{c}");
}

#[test]
fn refuses_what_it_could_not_start_with() {
    refused(
        &webhook(&["--cloud=aws", "--provisioner=aks"], &[]),
        "needs cloud \"azure\"",
    );
    refused(
        &webhook(&["--tls-mode=files"], &[]),
        "needs --tls-cert-file and --tls-key-file",
    );
    refused(
        &webhook(&["--sku-catalog=/nonexistent/skus.yaml"], &[]),
        "loading the SKU catalog /nonexistent/skus.yaml",
    );
    refused(
        &webhook(&[], &[("LOG_FORMAT", "yaml")]),
        "invalid value 'yaml'",
    );
}
