//! The controller–runtime contract, tested as a whole: the serving container that
//! `kaito-controller` writes into a workspace's StatefulSet is run as written
//! (`kaito_e2e::container`: the `kaito-runtime` binary with exactly the container's arguments
//! and environment, nothing else but PATH and HOME, each volume mount mapped to a temporary
//! directory and the container port to a free loopback port) — and it must download the preset's pinned weights
//! from the local Hugging Face hub the controller points it at, pass the probes the spec
//! names, and answer. A flag the runtime does not know, a path it does not use or a probe it
//! does not serve fails here.

use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use anyhow::{Context, Result};
use kaito_e2e::container::{local_command, probe_path, secret_value};
use kaito_e2e::hub::{Hub, smollm2_gguf, smollm2_repo};
use kaito_e2e::{
    ControllerProcess, GpuNode, TestNamespace, http_request, log_tail, spawn_logged, unique_name,
    wait_for,
};
use serde_json::Value;

/// A serving container turned into a local process; killed on drop.
struct LocalContainer {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for LocalContainer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_container(ns: &TestNamespace<'_>, pod: &Value, container: &Value) -> Result<LocalContainer> {
    let dir = tempfile::tempdir()?;
    let port = kaito_e2e::free_port()?;
    let secret = |name: &str, key: &str| secret_value(&ns.get_json(["secret", name])?, key);
    let mut cmd = local_command(pod, container, dir.path(), port, &secret)?;
    let log = dir.path().join("runtime.log");
    let child = spawn_logged(&mut cmd, &log)?;
    Ok(LocalContainer {
        child,
        port,
        log,
        _dir: dir,
    })
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn the_controllers_serving_container_runs_the_runtime_as_written() -> Result<()> {
    let Some(gguf) = smollm2_gguf()? else {
        return Ok(());
    };
    let hub = Hub::start(vec![smollm2_repo(&gguf)?])?;
    let cluster = kaito_e2e::running_cluster_with_crds()?;
    let ns = cluster.namespace("contract")?;
    let label = unique_name("smollm2");
    let _node = cluster.add_gpu_node(&GpuNode::for_apps("gpu", &label))?;
    let log = std::env::temp_dir().join(format!("{}-controller.log", ns.name()));
    let mut ctl =
        ControllerProcess::spawn(&ns, "byo", ["--hf-endpoint", hub.endpoint().as_str()], &log)?;
    ctl.wait_ready()?;
    let name = "smollm2";
    ns.apply(&kaito_e2e::seed_workspace(
        "inference/kaito_workspace_smollm2.yaml",
        name,
        &label,
    )?)?;
    let sts = wait_for(
        "the controller's StatefulSet",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || Ok(ns.get_json(["statefulset", name]).ok()),
    )
    .with_context(|| ctl.log_tail())?;
    let pod = &sts["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let env_names: Vec<&str> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env_names.contains(&"HF_ENDPOINT"), "{env_names:?}");
    let started = std::time::Instant::now();
    let local = run_container(&ns, pod, container)?;
    let get = |path: &str| http_request(local.port, "GET", path, None, Duration::from_secs(5));
    let alive = probe_path(container, "livenessProbe")?;
    let startup = probe_path(container, "startupProbe")?;
    let ready = probe_path(container, "readinessProbe")?;
    wait_for(
        "the liveness probe",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || Ok(get(&alive).ok().filter(|(c, _)| *c == 200)),
    )
    .with_context(|| log_tail(&local.log, "runtime", 30))?;
    let budget = container["startupProbe"]["failureThreshold"]
        .as_u64()
        .unwrap_or(0)
        * container["startupProbe"]["periodSeconds"]
            .as_u64()
            .unwrap_or(0);
    wait_for(
        "the startup probe (download and load)",
        Duration::from_secs(budget.min(600)),
        Duration::from_millis(250),
        || Ok(get(&startup).ok().filter(|(c, _)| *c == 200)),
    )
    .with_context(|| log_tail(&local.log, "runtime", 30))?;
    eprintln!(
        "contract: the controller's container downloaded and loaded {} in {:.1} s",
        kaito_e2e::hub::SMOLLM2_FILE,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(get(&ready)?.0, 200);
    let question = serde_json::json!({
        "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        "temperature": 0, "max_tokens": 24});
    let (code, body) = http_request(
        local.port,
        "POST",
        "/v1/chat/completions",
        Some(&question.to_string()),
        Duration::from_secs(120),
    )?;
    assert_eq!(code, 200, "{body}");
    let body: Value = serde_json::from_str(&body)?;
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(answer.contains("Paris"), "{body}");
    assert_eq!(
        body["model"], "smollm2-135m-instruct",
        "served under the preset's name"
    );
    // The download went to the weights volume the controller declared.
    let weights = container["args"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .position(|w| w == "--model-dir")
                .map(|i| a[i + 1].clone())
        })
        .context("--model-dir")?;
    assert!(
        container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["mountPath"] == weights),
        "--model-dir {weights} is not a mounted volume"
    );
    drop(local);
    Ok(())
}
