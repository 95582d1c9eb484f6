//! End-to-end tests of `kubectl kaito` (kubectl-kaito/) against the local control plane:
//! `create --dry-run=client` of the seeds, `create` → `get` columns, `status` explaining an
//! unschedulable workspace, `logs` through kwok, `chat --prompt` to a real `kaito-runtime`
//! reached by port-forward through the API server, and `delete`.
//!
//! One test, `plugin_create_get_turns_true_with_webhook_and_controller_then_delete_waits`,
//! runs the real `kaito-webhook` (registered for its namespace only) and `kaito-controller
//! --provisioner byo` (scoped to its namespace) as local processes, on a simulated GPU node:
//! `create` → `get` until RESOURCEREADY/INFERENCEREADY/WORKSPACEREADY are True → `status` →
//! `delete` waits until the finalizer is released. In the others no controller runs, so where
//! a test needs status it writes it through the status subresource, and it makes the serving
//! pod itself with the labels the controller gives pods (`kaito.sh/workspace`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result};
use kaito_e2e::{
    CmdOutput, ControllerProcess, GpuNode, TestNamespace, WebhookProcess, free_port, run_command,
    table_header, unique_name, wait_for,
};

/// The plugin binary (`KUBECTL_KAITO_BIN`, else target/debug).
fn plugin() -> Result<PathBuf> {
    kaito_e2e::workspace_bin("kubectl-kaito", "KUBECTL_KAITO_BIN")
}

/// `kaito-runtime` (`KAITO_RUNTIME_BIN`, else target/debug: the model the test generates is tiny).
fn runtime() -> Result<PathBuf> {
    kaito_e2e::workspace_bin("kaito-runtime", "KAITO_RUNTIME_BIN")
}

/// Runs the plugin against the cluster in `ns`.
fn kaito(ns: &TestNamespace<'_>, args: &[&str]) -> Result<CmdOutput> {
    let mut cmd = Command::new(plugin()?);
    cmd.arg("--kubeconfig")
        .arg(ns.cluster().kubeconfig())
        .args(["-n", ns.name()])
        .args(args)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy");
    run_command(cmd, None, Duration::from_secs(180))
}

fn kaito_ok(ns: &TestNamespace<'_>, args: &[&str]) -> Result<String> {
    let out = kaito(ns, args)?;
    anyhow::ensure!(
        out.success(),
        "kubectl kaito {args:?} failed:\nstdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    Ok(out.stdout)
}

fn set_status(ns: &TestNamespace<'_>, name: &str, status: serde_json::Value) -> Result<()> {
    let patch = serde_json::json!({"status": status}).to_string();
    ns.kubectl_ok([
        "patch",
        "workspaces.kaito.sh",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ])?;
    Ok(())
}

fn condition(t: &str, status: &str, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"type": t, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z"})
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn plugin_dry_run_client_defaults_and_sizes_every_seed() -> Result<()> {
    for file in kaito_e2e::example_files()? {
        let mut cmd = Command::new(plugin()?);
        cmd.args(["create", "-f"])
            .arg(&file)
            .arg("--dry-run=client");
        let out = run_command(cmd, None, Duration::from_secs(60))?;
        anyhow::ensure!(out.success(), "{}: {}", file.display(), out.stderr);
        let v: serde_yaml::Value =
            serde_yaml::from_str(&out.stdout).context("dry-run output is YAML")?;
        assert_eq!(v["resource"]["count"].as_i64(), Some(1), "{}", out.stdout);
        assert!(
            out.stdout
                .contains("# Summary: 1 × Standard_NC6s_v3 (V100 16 GiB), f16, fits: needs"),
            "{}: {}",
            file.display(),
            out.stdout
        );
    }
    // A preset that does not exist is refused as the webhook words it, with exit status 1.
    let mut cmd = Command::new(plugin()?);
    cmd.args([
        "create",
        "workspace",
        "bad",
        "--preset",
        "no-such-model",
        "--dry-run=client",
    ]);
    let out = run_command(cmd, None, Duration::from_secs(60))?;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("inference.preset"), "{}", out.stderr);
    Ok(())
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn plugin_create_get_status_explains_unschedulable_then_delete() -> Result<()> {
    let cluster = kaito_e2e::running_cluster_with_crds()?;
    let ns = cluster.namespace("plugin-get")?;
    let name = "phi3";
    let created = kaito_ok(
        &ns,
        &[
            "create",
            "workspace",
            name,
            "--preset",
            "phi-3-mini-4k-instruct",
            "--instance-type",
            "Standard_NC6s_v3",
            "--label",
            "apps=phi3",
        ],
    )?;
    assert!(
        created.contains(&format!("workspace.kaito.sh/{name} created")),
        "{created}"
    );

    let dup = kaito(
        &ns,
        &[
            "create",
            "workspace",
            name,
            "--preset",
            "phi-3-mini-4k-instruct",
        ],
    )?;
    assert!(
        !dup.success() && dup.stderr.contains("already exists"),
        "{}",
        dup.stderr
    );

    let table = kaito_ok(&ns, &["get"])?;
    assert_eq!(
        table_header(&table),
        [
            "NAME",
            "INSTANCE",
            "RESOURCEREADY",
            "INFERENCEREADY",
            "WORKSPACEREADY",
            "AGE"
        ]
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .context("a row")?
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..5],
        [name, "Standard_NC6s_v3", "-", "-", "-"],
        "{table}"
    );

    // An unschedulable serving pod (no node has the selector) and the condition the
    // controller would write for it.
    ns.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}-0
  labels: {{kaito.sh/workspace: {name}, kaito.sh/workspacenamespace: {ns}}}
spec:
  nodeSelector: {{kaito-e2e/no-such-node: "true"}}
  containers:
  - name: runtime
    image: registry.invalid/kaito-runtime:latest
    resources: {{limits: {{nvidia.com/gpu: "1"}}}}
"#,
        ns = ns.name()
    ))?;
    let sched = wait_for(
        "FailedScheduling event",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let out = ns.kubectl([
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.name={name}-0,reason=FailedScheduling"),
                "-o",
                "name",
            ])?;
            Ok((out.success() && !out.stdout.trim().is_empty()).then_some(()))
        },
    );
    sched?;
    set_status(
        &ns,
        name,
        serde_json::json!({
            "state": "Pending",
            "conditions": [
                condition("ResourceReady", "True", "Ready", "1/1 GPU nodes ready"),
                condition("InferenceReady", "False", "Unschedulable", &format!("pod {name}-0: 0/1 nodes are available")),
                condition("WorkspaceSucceeded", "False", "Unschedulable", "not serving yet"),
            ]
        }),
    )?;
    let status = kaito_ok(&ns, &["status", name])?;
    for want in [
        "Conditions:",
        "InferenceReady",
        "Unschedulable",
        &format!("{name}-0"),
        "Pending",
        "FailedScheduling",
        "Next step: the scheduler cannot place the pod",
    ] {
        assert!(status.contains(want), "status lacks {want:?}:\n{status}");
    }
    let wide = kaito_ok(&ns, &["get", "-o", "wide"])?;
    assert_eq!(
        table_header(&wide),
        [
            "NAME",
            "INSTANCE",
            "RESOURCEREADY",
            "INFERENCEREADY",
            "WORKSPACEREADY",
            "AGE",
            "PRESET",
            "NODES",
            "ENDPOINT"
        ]
    );
    let all = kaito_ok(&ns, &["get", "-A"])?;
    assert!(
        all.lines()
            .any(|l| l.starts_with(ns.name()) && l.contains(name)),
        "{all}"
    );

    // The columns turn True.
    set_status(
        &ns,
        name,
        serde_json::json!({
            "state": "Ready",
            "conditions": [
                condition("ResourceReady", "True", "Ready", "ok"),
                condition("InferenceReady", "True", "Ready", "ok"),
                condition("WorkspaceSucceeded", "True", "Ready", "ok"),
            ]
        }),
    )?;
    let table = kaito_ok(&ns, &["get", name])?;
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .context("a row")?
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..5],
        [name, "Standard_NC6s_v3", "True", "True", "True"],
        "{table}"
    );

    let deleted = kaito_ok(&ns, &["delete", name])?;
    assert!(deleted.contains("deleted"), "{deleted}");
    let gone = kaito(&ns, &["get", name])?;
    assert_eq!(gone.status.code(), Some(1));
    assert!(gone.stderr.contains("not found"), "{}", gone.stderr);
    Ok(())
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn plugin_logs_and_chat_reach_a_real_runtime_through_the_apiserver() -> Result<()> {
    let cluster = kaito_e2e::running_cluster_with_crds()?;
    let ns = cluster.namespace("plugin-chat")?;
    let group = ns.name().to_owned();
    let _node = cluster
        .add_gpu_node(&GpuNode::new(unique_name("gpu-chat")).label("kaito-e2e/group", &group))?;
    let name = "chat";
    kaito_ok(
        &ns,
        &[
            "create",
            "workspace",
            name,
            "--preset",
            "phi-3-mini-4k-instruct",
            "--instance-type",
            "Standard_NC6s_v3",
        ],
    )?;

    // Not ready yet: a clear message, non-zero exit.
    let early = kaito(&ns, &["chat", name, "--prompt", "hi"])?;
    assert_eq!(early.status.code(), Some(1), "{}", early.stderr);
    assert!(
        early.stderr.contains("not ready to chat yet"),
        "{}",
        early.stderr
    );

    // A real runtime serving a generated tiny model on loopback, logging to a file.
    let rt = runtime()?;
    let dir = std::env::temp_dir().join(unique_name("kaito-plugin-chat"));
    std::fs::create_dir_all(&dir)?;
    let model = dir.join("model");
    let out = run_command(
        {
            let mut c = Command::new(&rt);
            c.args(["gen-model", "--arch", "llama", "--out"])
                .arg(&model);
            c
        },
        None,
        Duration::from_secs(120),
    )?;
    anyhow::ensure!(out.success(), "gen-model failed: {}", out.stderr);
    let port = free_port()?;
    let raw_log = dir.join("runtime.raw.log");
    let mut child = Command::new(&rt);
    child
        .args(["--model-dir"])
        .arg(&model)
        .args([
            "--served-model-name",
            "phi-3-mini-4k-instruct",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--dtype",
            "f32",
            "--cpu",
        ])
        .stdout(std::fs::File::create(&raw_log)?)
        .stderr(Stdio::null());
    let _runtime = KillOnDrop(child.spawn()?);
    wait_for(
        "the runtime to become healthy",
        Duration::from_secs(180),
        Duration::from_millis(500),
        || {
            let ok = std::net::TcpStream::connect(("127.0.0.1", port))
                .and_then(|mut s| {
                    use std::io::{Read as _, Write as _};
                    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
                    let mut b = String::new();
                    s.read_to_string(&mut b)?;
                    Ok(b.starts_with("HTTP/1.1 200"))
                })
                .unwrap_or(false);
            Ok(ok.then_some(()))
        },
    )?;

    // The serving pod as the controller labels it, on the test's node, with kwok routing
    // its logs to the runtime's log (in CRI format) and its port 5000 to the runtime.
    ns.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}-0
  labels: {{kaito.sh/workspace: {name}, kaito.sh/workspacenamespace: {group}}}
spec:
  nodeSelector: {{kaito-e2e/group: {group}}}
  tolerations: [{{key: sku, operator: Exists, effect: NoSchedule}}]
  containers:
  - name: runtime
    image: registry.invalid/kaito-runtime:latest
    ports: [{{containerPort: 5000}}]
"#
    ))?;
    ns.kubectl_ok([
        "wait",
        "--for=condition=Ready",
        &format!("pod/{name}-0"),
        "--timeout=90s",
    ])?;
    let raw = std::fs::read_to_string(&raw_log)?;
    let cri_log = dir.join("runtime.log");
    let cri: String = raw
        .lines()
        .map(|l| format!("2026-01-01T00:00:00.000000000Z stdout F {l}\n"))
        .collect();
    std::fs::write(&cri_log, &cri)?;
    ns.apply(&format!(
        r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: Logs
metadata: {{name: {name}-0}}
spec:
  logs:
  - containers: [runtime]
    logsFile: {log}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: PortForward
metadata: {{name: {name}-0}}
spec:
  forwards:
  - ports: [5000]
    target: {{address: 127.0.0.1, port: {port}}}
"#,
        log = cri_log.display()
    ))?;

    let first_line = raw
        .lines()
        .next()
        .context("the runtime logged nothing")?
        .to_string();
    let logs = wait_for(
        "logs through kwok",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let out = kaito(&ns, &["logs", name])?;
            Ok((out.success() && out.stdout.contains(&first_line)).then_some(out.stdout))
        },
    )?;
    assert_eq!(logs.lines().count(), raw.lines().count(), "{logs}");

    let reply = wait_for(
        "chat through the port-forward",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || {
            let out = kaito(
                &ns,
                &[
                    "chat",
                    name,
                    "--prompt",
                    "Hello",
                    "--max-tokens",
                    "8",
                    "--temperature",
                    "0",
                ],
            )?;
            Ok(out.success().then_some(out.stdout))
        },
    )?;
    assert!(!reply.trim().is_empty(), "an empty reply");
    let raw_reply = kaito_ok(
        &ns,
        &[
            "chat",
            name,
            "--raw-chat",
            "--prompt",
            "Hello",
            "--max-tokens",
            "4",
        ],
    )?;
    assert!(!raw_reply.trim().is_empty());

    kaito_ok(&ns, &["delete", name, "--wait=false"])?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// With the real webhook and controller running.
// ---------------------------------------------------------------------------------------------

/// The cells of `kubectl kaito get` by header column (cells may be `-`, never empty).
fn get_row(table: &str) -> Result<Vec<(String, String)>> {
    let header = table_header(table);
    let row: Vec<String> = table
        .lines()
        .nth(1)
        .context("a row")?
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    Ok(header.into_iter().zip(row).collect())
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn plugin_create_get_turns_true_with_webhook_and_controller_then_delete_waits() -> Result<()> {
    let cluster = kaito_e2e::running_cluster_with_crds()?;
    let ns = cluster.namespace("plugin-live")?;
    let label = unique_name("live");
    let node = cluster.add_gpu_node(&GpuNode::for_apps("gpu-live", &label))?;
    let webhook = WebhookProcess::start(cluster, &ns, "byo")?;
    let ctl = ControllerProcess::start(&ns, "byo")?;
    let name = "phi3-live";
    let apps = format!("apps={label}");

    // A rejection comes back as the webhook worded it, exit status 1, nothing created.
    let bad = kaito(
        &ns,
        &[
            "create",
            "workspace",
            "bad",
            "--preset",
            "no-such-model",
            "--instance-type",
            "Standard_NC6s_v3",
            "--label",
            &apps,
        ],
    )?;
    assert_eq!(bad.status.code(), Some(1), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("validate.workspace.kaito.sh")
            && bad.stderr.contains("inference.preset"),
        "{}",
        bad.stderr
    );

    let created = kaito_ok(
        &ns,
        &[
            "create",
            "workspace",
            name,
            "--preset",
            "phi-3-mini-4k-instruct",
            "--instance-type",
            "Standard_NC6s_v3",
            "--label",
            &apps,
        ],
    )?;
    assert!(
        created.contains(&format!("workspace.kaito.sh/{name} created")),
        "{created}"
    );
    // The mutating webhook filled in the defaults.
    let ws = ns.get_json(["workspaces.kaito.sh", name])?;
    assert_eq!(ws["resource"]["count"], 1, "{ws}");

    // `get` until the three columns are True, remembering every distinct row seen.
    let ready = ["RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY"];
    let mut seen: Vec<String> = Vec::new();
    let row = wait_for(
        "RESOURCEREADY, INFERENCEREADY, WORKSPACEREADY True in `kubectl kaito get`",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || {
            let table = kaito_ok(&ns, &["get", name])?;
            let row = get_row(&table)?;
            let cells: Vec<String> = row
                .iter()
                .filter(|(h, _)| ready.contains(&h.as_str()))
                .map(|(_, c)| c.clone())
                .collect();
            let line = cells.join(" ");
            if seen.last() != Some(&line) {
                seen.push(line);
            }
            Ok(cells.iter().all(|c| c == "True").then_some(row))
        },
    )
    .with_context(|| {
        format!(
            "rows seen: {seen:?}\n{}\n{}",
            ctl.log_tail(),
            webhook.log_tail()
        )
    })?;
    eprintln!("[plugin e2e] READY columns as `kubectl kaito get` showed them: {seen:?}");
    let cell = |h: &str| {
        row.iter()
            .find(|(k, _)| k == h)
            .map(|(_, c)| c.as_str())
            .unwrap_or_default()
    };
    assert_eq!(cell("NAME"), name);
    assert_eq!(cell("INSTANCE"), "Standard_NC6s_v3");

    // `status` explains the ready workspace: conditions, its node and its pod.
    let status = kaito_ok(&ns, &["status", name])?;
    for want in [
        "Conditions:",
        "ResourceReady",
        "InferenceReady",
        node.name(),
        &format!("{name}-0"),
    ] {
        assert!(status.contains(want), "status lacks {want:?}:\n{status}");
    }
    let wide = kaito_ok(&ns, &["get", name, "-o", "wide"])?;
    assert!(wide.contains("phi-3-mini-4k-instruct"), "{wide}");

    // `delete` waits until the controller released the finalizer and the object is gone.
    let deleted = kaito_ok(&ns, &["delete", name])?;
    assert!(
        deleted.contains(&format!("workspace.kaito.sh/{name} deleted"))
            && !deleted.contains("not waiting"),
        "{deleted}"
    );
    let gone = ns.kubectl(["get", "workspaces.kaito.sh", name])?;
    assert!(
        !gone.success() && gone.stderr.contains("NotFound"),
        "{}",
        gone.stderr
    );
    let gone = kaito(&ns, &["get", name])?;
    assert_eq!(gone.status.code(), Some(1), "{}", gone.stdout);
    assert!(gone.stderr.contains("not found"), "{}", gone.stderr);
    drop(ctl);
    drop(webhook);
    Ok(())
}
