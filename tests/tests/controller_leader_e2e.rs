//! Leader election of two `kaito-controller` processes on one Lease, against the local control
//! plane, with short lease settings (lease 4 s, renew deadline 3 s, retry 1 s):
//!
//! - one of them becomes the Lease's holder and reconciles a Workspace to ready; the other
//!   stays a standby: not ready, no reconcile in its metrics, no "leading" in its log;
//! - the leader is killed (SIGKILL, so it releases nothing): the standby becomes the holder
//!   within the lease duration plus two retry periods and some slack (it must first see the
//!   Lease unchanged for a whole lease duration on its own clock), the takeover time is
//!   printed, and it reconciles a Workspace created afterwards to ready.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use kaito_e2e::{ControllerProcess, GpuNode, TestNamespace, repo_root, unique_name, wait_for};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(500);
const LEASE: &str = "kaito-controller";
const LEASE_SECS: u64 = 4;
const RENEW_DEADLINE_SECS: u64 = 3;
const RETRY_SECS: u64 = 1;

/// The seed inference workspace named `name`, on the GPU nodes labelled `apps=<label>`.
fn workspace(name: &str, label: &str) -> Result<String> {
    let text =
        std::fs::read_to_string(repo_root().join("examples/inference/kaito_workspace_phi_3.yaml"))?;
    let mut v: Value = serde_yaml::from_str(&text)?;
    v["metadata"]["name"] = Value::from(name);
    v["resource"]["count"] = Value::from(1);
    v["resource"]["labelSelector"] = serde_json::json!({"matchLabels": {"apps": label}});
    Ok(serde_yaml::to_string(&v)?)
}

fn holder(ns: &TestNamespace<'_>) -> Result<Option<String>> {
    let out = ns.kubectl(["get", "lease", LEASE, "-o", "json"])?;
    if !out.success() {
        return Ok(None);
    }
    let lease: Value = serde_json::from_str(&out.stdout)?;
    Ok(lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned))
}

/// `kaito_controller_reconciles_total` of a controller's /metrics.
fn reconciles(ctl: &ControllerProcess<'_>) -> Result<u64> {
    let text = ctl.http_get("/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix("kaito_controller_reconciles_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .with_context(|| format!("no kaito_controller_reconciles_total in:\n{text}"))
}

fn wait_succeeded(ns: &TestNamespace<'_>, name: &str, ctl: &ControllerProcess<'_>) -> Result<()> {
    wait_for(
        &format!("{name}: WorkspaceSucceeded True"),
        WAIT,
        POLL,
        || {
            Ok(ns
                .workspace_condition_true(name, "WorkspaceSucceeded")?
                .then_some(()))
        },
    )
    .with_context(|| ctl.log_tail())
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn the_standby_takes_over_within_the_lease_time_when_the_leader_is_killed() -> Result<()> {
    let cluster = kaito_e2e::running_cluster_with_crds()?;
    let ns = cluster.namespace("leader")?;
    // One single-GPU node per workspace.
    let labels = [unique_name("leader-before"), unique_name("leader-after")];
    let mut nodes = Vec::new();
    for label in &labels {
        nodes.push(cluster.add_gpu_node(&GpuNode::for_apps("gpu", label))?);
    }
    let timing = [
        format!("--leader-election-lease-duration-secs={LEASE_SECS}"),
        format!("--leader-election-renew-deadline-secs={RENEW_DEADLINE_SECS}"),
        format!("--leader-election-retry-period-secs={RETRY_SECS}"),
    ];
    let spawn = |id: &str| -> Result<(String, std::path::PathBuf, ControllerProcess<'_>)> {
        let identity = format!("{}-{id}", ns.name());
        let log = std::env::temp_dir().join(format!("{identity}.log"));
        let mut args = timing.to_vec();
        args.push(format!("--identity={identity}"));
        let p = ControllerProcess::spawn(&ns, "byo", &args, &log)?;
        Ok((identity, log, p))
    };
    let (id_a, log_a, a) = spawn("a")?;
    let (id_b, log_b, b) = spawn("b")?;

    let first = wait_for("a holder of the Lease", WAIT, POLL, || holder(&ns))?;
    let (mut leader, leader_log, standby, standby_id, standby_log) = if first == id_a {
        (a, log_a, b, id_b, log_b)
    } else if first == id_b {
        (b, log_b, a, id_a, log_a)
    } else {
        bail!("the Lease is held by {first:?}, neither {id_a} nor {id_b}");
    };
    leader.wait_ready()?;

    // Only the leader reconciles.
    ns.apply(&workspace("ws-before", &labels[0])?)?;
    wait_succeeded(&ns, "ws-before", &leader)?;
    ensure!(reconciles(&leader)? > 0, "the leader counted no reconcile");
    ensure!(
        reconciles(&standby)? == 0,
        "the standby reconciled while the other led:\n{}",
        standby.log_tail()
    );
    ensure!(
        standby.http_get("/readyz").is_err(),
        "the standby claims to be ready"
    );
    let standby_text = std::fs::read_to_string(&standby_log)?;
    ensure!(
        !standby_text.contains("leading"),
        "the standby led:\n{standby_text}"
    );
    ensure!(
        holder(&ns)?.as_deref() == Some(first.as_str()),
        "holder changed"
    );

    // Kill the leader; the standby must hold the Lease within the lease time (+ slack).
    ensure!(leader.kill9()?, "the leader had exited on its own:\n{}", {
        std::fs::read_to_string(&leader_log).unwrap_or_default()
    });
    let killed = Instant::now();
    let limit = Duration::from_secs(LEASE_SECS + 2 * RETRY_SECS + 3);
    wait_for(
        "the standby to hold the Lease",
        limit,
        Duration::from_millis(100),
        || Ok((holder(&ns)?.as_deref() == Some(standby_id.as_str())).then_some(())),
    )
    .with_context(|| standby.log_tail())?;
    let takeover = killed.elapsed();
    eprintln!(
        "takeover: the standby held the Lease {:.1} s after the leader was killed (lease {LEASE_SECS} s, retry {RETRY_SECS} s, limit {:.0} s)",
        takeover.as_secs_f64(),
        limit.as_secs_f64()
    );
    // It had to see the Lease unchanged for the lease duration, counted from no earlier than
    // the leader's last renewal (at most one retry period before the kill).
    ensure!(
        takeover
            >= Duration::from_secs(LEASE_SECS - RETRY_SECS)
                .saturating_sub(Duration::from_millis(500)),
        "taken over after {takeover:?}, before the lease could expire"
    );

    let mut new_leader = standby;
    new_leader.wait_ready()?;
    ns.apply(&workspace("ws-after", &labels[1])?)?;
    wait_succeeded(&ns, "ws-after", &new_leader)?;
    ensure!(
        reconciles(&new_leader)? > 0,
        "the new leader counted no reconcile"
    );
    drop(new_leader);
    drop(nodes);
    Ok(())
}
