//! The chart checks (`scripts/chart-check.sh`: helm lint, helm template per provisioner,
//! schema refusals, hadolint, `kubectl apply --dry-run=server`) as part of the end-to-end
//! tier, against the cluster the tier runs (`KAITO_CLUSTER_DIR`), or the shared one.

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use kaito_e2e::{Cluster, repo_root, run_command};

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn chart_lints_renders_and_is_accepted_by_the_apiserver() -> Result<()> {
    let cluster = match std::env::var("KAITO_CLUSTER_DIR") {
        Ok(dir) if std::path::Path::new(&dir).join("kubeconfig").exists() => {
            Cluster::from_script()?
        }
        _ => Cluster::shared().clone(),
    };
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("scripts/chart-check.sh"))
        .env("KAITO_CLUSTER_DIR", cluster.state_dir())
        .env("KAITO_CLUSTER_BIN", cluster.bin_dir());
    let out = run_command(cmd, None, Duration::from_secs(900))?;
    eprintln!("{}", out.stderr);
    ensure!(
        out.success(),
        "scripts/chart-check.sh failed:\n{}",
        out.stderr
    );
    ensure!(
        out.stderr.contains("all chart checks passed")
            && out.stderr.contains("kubectl apply --dry-run=server (byo)"),
        "scripts/chart-check.sh did not run the server-side dry run:\n{}",
        out.stderr
    );
    Ok(())
}
