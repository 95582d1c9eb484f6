//! `kaito-controller --check-config`: the flags and environment the chart passes are parsed
//! and validated without starting anything (the chart-level check is
//! `tests/tests/chart_binaries.rs`).

use std::process::{Command, Output};

use serde_json::Value;

fn controller(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kaito-controller"))
        .env_clear()
        .envs(env.iter().copied())
        .arg("--check-config")
        .args(args)
        .output()
        .expect("kaito-controller runs")
}

fn config(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "--check-config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--check-config prints JSON")
}

const AKS_ENV: [(&str, &str); 4] = [
    ("KAITO_PROVISIONER", "aks"),
    (
        "AZURE_SUBSCRIPTION_ID",
        "00000000-0000-0000-0000-000000000000",
    ),
    ("AZURE_RESOURCE_GROUP", "rg-kaito"),
    ("AZURE_CLUSTER_NAME", "aks-kaito"),
];

#[test]
fn aks_takes_its_cluster_from_the_environment() {
    let c = config(&controller(&[], &AKS_ENV));
    assert_eq!(c["provisioner"], "aks");
    assert_eq!(c["cloud"], "azure");
    assert_eq!(c["azure"]["clusterName"], "aks-kaito");
    assert_eq!(c["azure"]["resourceGroup"], "rg-kaito");
}

#[test]
fn aks_without_a_cluster_name_names_the_setting() {
    let out = controller(&[], &AKS_ENV[..3]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("set --azure-cluster-name (AZURE_CLUSTER_NAME)"),
        "{err}"
    );
}

#[test]
fn the_cloud_comes_from_kaito_cloud_and_aks_needs_azure() {
    let c = config(&controller(
        &["--provisioner=karpenter"],
        &[("KAITO_CLOUD", "aws")],
    ));
    assert_eq!(c["cloud"], "aws");
    let mut env = AKS_ENV.to_vec();
    env.push(("KAITO_CLOUD", "aws"));
    let out = controller(&[], &env);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs cloud \"azure\""), "{err}");
    let out = controller(&["--cloud=gcp"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("use \"azure\" or \"aws\""), "{err}");
}

#[test]
fn the_sku_catalog_is_the_webhooks_setting() {
    let dir = std::env::temp_dir().join(format!("kaito-controller-skus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join("skus.yaml");
    std::fs::write(
        &path,
        "version: 1\nclouds:\n  azure:\n    - {name: Custom_GPU_1, gpus: 1, gpuMemory: 24Gi, \
         gpuModel: A10, computeCapability: \"8.6\", vcpus: 8}\n  aws: []\n",
    )
    .expect("write the catalog");
    let p = path.display().to_string();
    let c = config(&controller(&[], &[("KAITO_SKU_CATALOG", p.as_str())]));
    assert_eq!(c["skuCatalog"], p.as_str());
    assert_eq!(c["gpuSizes"], 1, "{c}");
    let builtin = config(&controller(&[], &[]));
    assert!(
        builtin["gpuSizes"].as_u64().unwrap_or_default() > 1,
        "{builtin}"
    );

    std::fs::write(&path, "version: 1\nclouds: {azure: [{name: X}]}\n").expect("write");
    let out = controller(&["--sku-catalog", p.as_str()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--sku-catalog") && stderr.contains(&p),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
