//! `helm template` of the chart without a cluster: helm from `KAITO_CLUSTER_BIN`, else the
//! directory `tests/cluster/cluster.sh bin` prints (`build.sh`'s cache, built on first use).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::{cluster_script, repo_root, run_command};

/// The Kubernetes version rendered for (the local cluster's); helm's own default (1.20) is
/// older than the chart's kubeVersion.
pub const KUBE_VERSION: &str = "1.34.4";

/// The helm binary.
pub fn helm_bin() -> Result<PathBuf> {
    let dir = match std::env::var_os("KAITO_CLUSTER_BIN") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let mut cmd = Command::new("bash");
            cmd.arg(cluster_script()).arg("bin");
            let out = run_command(cmd, None, Duration::from_secs(3600))?.ok()?;
            PathBuf::from(out.lines().last().unwrap_or_default().trim())
        }
    };
    let helm = dir.join("helm");
    ensure!(
        helm.is_file(),
        "{} does not exist: run tests/cluster/build.sh, or point KAITO_CLUSTER_BIN at a \
         directory holding helm",
        helm.display()
    );
    Ok(helm)
}

/// The objects `helm template <release> charts/kaito --namespace <ns>` renders with the
/// `--set` pairs `sets`, limited to the templates `show_only` (all when empty).
pub fn render(
    release: &str,
    ns: &str,
    sets: &[(&str, &str)],
    show_only: &[&str],
) -> Result<Vec<Value>> {
    render_with(&helm_bin()?, release, ns, sets, show_only)
}

/// Like [`render`], with the helm binary `helm` (found once with [`helm_bin`] by a caller that
/// renders many times).
pub fn render_with(
    helm: &Path,
    release: &str,
    ns: &str,
    sets: &[(&str, &str)],
    show_only: &[&str],
) -> Result<Vec<Value>> {
    let home = tempfile::tempdir()?;
    let mut cmd = Command::new(helm);
    cmd.args(["template", release])
        .arg(repo_root().join("charts/kaito"))
        .args(["--namespace", ns, "--kube-version", KUBE_VERSION])
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"));
    for (k, v) in sets {
        cmd.args(["--set", &format!("{k}={v}")]);
    }
    for s in show_only {
        cmd.args(["--show-only", s]);
    }
    let yaml = run_command(cmd, None, Duration::from_secs(120))?
        .ok()
        .with_context(|| format!("helm template {sets:?}"))?;
    let mut docs = Vec::new();
    for doc in yaml.split("\n---\n") {
        let v: Value = serde_yaml::from_str(doc)
            .with_context(|| format!("a rendered document is not YAML:\n{doc}"))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// Like [`render`], but the error helm printed when it refuses the values.
pub fn render_error(release: &str, ns: &str, sets: &[(&str, &str)]) -> Result<String> {
    match render(release, ns, sets, &[]) {
        Ok(_) => anyhow::bail!("helm template accepted {sets:?}"),
        Err(e) => Ok(format!("{e:#}")),
    }
}
