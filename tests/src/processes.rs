//! The project's own servers as local processes for a test: `kaito-controller` scoped to the
//! test's namespace ([`ControllerProcess`]) and `kaito-webhook` registered for it
//! ([`WebhookProcess`]). Both clean up on drop, also when the test fails.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;

use crate::{Cluster, PROXY_VARS, TestNamespace, free_port, http_get, unique_name, wait_for};

/// How long a controller may take to serve /readyz.
const CONTROLLER_READY: Duration = Duration::from_secs(120);

/// Removes the proxy variables from `cmd`, so loopback traffic goes straight to its target.
pub fn no_proxy(cmd: &mut Command) -> &mut Command {
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
}

/// Spawns `cmd` with stdin closed, stdout and stderr appended to the file `log`, and no proxy
/// for loopback traffic ([`no_proxy`]).
pub fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    no_proxy(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone()?))
        .stderr(Stdio::from(file));
    cmd.spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))
}

/// The last `n` lines of the log file `path`, headed "`what` log (last lines):", for the
/// context of a failed wait.
pub fn log_tail(path: &Path, what: &str, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "{what} log (last lines):\n{}",
        lines[lines.len().saturating_sub(n)..].join("\n")
    )
}

/// `kaito-controller` (`KAITO_CONTROLLER_BIN`, else the target dir's) for one namespace: it
/// watches only that namespace and holds its leader lease there. Dropped normally, it first
/// lets the controller delete the namespace's workspaces (so their finalizers are released and
/// what they made is removed), then kills it; [`ControllerProcess::kill9`] just kills it.
pub struct ControllerProcess<'a> {
    child: Child,
    ns: &'a TestNamespace<'a>,
    log: PathBuf,
    port: u16,
    cleanup: bool,
}

impl<'a> ControllerProcess<'a> {
    /// Starts `kaito-controller --provisioner <provisioner>` with `extra` arguments, its output
    /// appended to `log`, without waiting for anything.
    pub fn spawn<I, S>(
        ns: &'a TestNamespace<'a>,
        provisioner: &str,
        extra: I,
        log: &Path,
    ) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let bin = crate::workspace_bin("kaito-controller", "KAITO_CONTROLLER_BIN")?;
        let port = free_port()?;
        let child = spawn_logged(
            Command::new(&bin)
                .args(["--provisioner", provisioner])
                .args(["--namespace", ns.name()])
                .args(["--leader-election-namespace", ns.name()])
                .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
                .args(extra)
                .env("KUBECONFIG", ns.cluster().kubeconfig())
                .env("RUST_LOG", "info,kube=warn"),
            log,
        )?;
        Ok(Self {
            child,
            ns,
            log: log.to_path_buf(),
            port,
            cleanup: true,
        })
    }

    /// Starts the controller (log in the temp dir, named after the namespace) and waits until
    /// it serves /readyz.
    pub fn start(ns: &'a TestNamespace<'a>, provisioner: &str) -> Result<Self> {
        let log = std::env::temp_dir().join(format!("{}-controller.log", ns.name()));
        let mut p = Self::spawn(ns, provisioner, std::iter::empty::<&str>(), &log)?;
        p.wait_ready()?;
        Ok(p)
    }

    /// Waits until /readyz answers 200; fails at once if the process exits.
    pub fn wait_ready(&mut self) -> Result<()> {
        wait_for(
            "the controller's /readyz",
            CONTROLLER_READY,
            Duration::from_millis(200),
            || {
                if let Some(status) = self.child.try_wait()? {
                    bail!("kaito-controller exited ({status})");
                }
                Ok(self.http_get("/readyz").ok().map(|_| ()))
            },
        )
        .with_context(|| self.log_tail())
    }

    /// The body of `GET path` on its metrics/health port, which must answer 200.
    pub fn http_get(&self, path: &str) -> Result<String> {
        match http_get(self.port, path)? {
            (200, body) => Ok(body),
            (code, body) => bail!("GET {path} answered {code}: {body}"),
        }
    }

    /// SIGKILL, no cleanup. Returns whether the process was still running (had not exited on
    /// its own).
    pub fn kill9(mut self) -> Result<bool> {
        self.cleanup = false;
        let running = self.child.try_wait()?.is_none();
        self.child.kill()?;
        self.child.wait()?;
        Ok(running)
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, "controller", 40)
    }
}

impl Drop for ControllerProcess<'_> {
    fn drop(&mut self) {
        if self.cleanup {
            let _ = self
                .ns
                .kubectl(["delete", "workspaces.kaito.sh", "--all", "--timeout=60s"]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The webhook's client authentication in the local cluster: the API server presents
/// `pki/webhook-client.crt` (CN kube-apiserver-webhook-client, signed by the cluster CA) to
/// every webhook (tests/cluster/cluster.sh), so the webhook requires it and then checks the
/// ConfigMaps tuning.config / inference.config name.
fn client_auth(cluster: &Cluster) -> Result<Vec<String>> {
    let pki = cluster
        .kubeconfig()
        .parent()
        .context("the kubeconfig has no directory")?
        .join("pki");
    if !pki.join("webhook-client.crt").is_file() {
        bail!(
            "{} has no webhook-client.crt: the cluster was started by an older \
             tests/cluster/cluster.sh; restart it (cluster.sh down; cluster.sh up)",
            pki.display()
        );
    }
    Ok(vec![
        format!("--client-ca-file={}", pki.join("ca.crt").display()),
        "--client-allowed-names=kube-apiserver-webhook-client".to_owned(),
    ])
}

/// `kaito-webhook` (`KAITO_WEBHOOK_BIN`, else the target dir's) on 127.0.0.1 with a
/// self-signed certificate, registered as a Mutating and a Validating WebhookConfiguration
/// for `kaito.sh` workspaces (v1alpha1 and v1beta1, failurePolicy Fail, sideEffects None) at
/// `https://127.0.0.1:PORT/mutate|validate`, scoped by a `namespaceSelector` to a label only
/// the test's namespace carries, so other tests in the same cluster are untouched. On drop it
/// is unregistered and stopped (SIGTERM, graceful).
pub struct WebhookProcess<'a> {
    cluster: &'a Cluster,
    child: Option<Child>,
    name: String,
    health_port: u16,
    dir: PathBuf,
}

impl<'a> WebhookProcess<'a> {
    /// Starts `kaito-webhook --provisioner <provisioner>`, labels `ns`, registers the webhook
    /// configurations for it and waits until the API server calls both (a server dry run of a
    /// workspace comes back defaulted, and one naming an unknown preset is refused by it).
    pub fn start(cluster: &'a Cluster, ns: &TestNamespace<'_>, provisioner: &str) -> Result<Self> {
        Self::start_with_env(cluster, ns, provisioner, &[])
    }

    /// [`WebhookProcess::start`] with more environment for the webhook (e.g. `HF_ENDPOINT`: the
    /// local Hugging Face hub).
    pub fn start_with_env(
        cluster: &'a Cluster,
        ns: &TestNamespace<'_>,
        provisioner: &str,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        const LABEL: &str = "kaito-e2e-webhook";
        let name = unique_name("kaito-webhook-e2e");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir)?;
        let ca_file = dir.join("ca.pem");
        let port = free_port()?;
        let health_port = free_port()?;
        let child = spawn_logged(
            Command::new(crate::workspace_bin("kaito-webhook", "KAITO_WEBHOOK_BIN")?)
                .args(["--bind-address", "127.0.0.1"])
                .args(["--health-bind-address", "127.0.0.1"])
                .args(["--port", &port.to_string()])
                .args(["--health-port", &health_port.to_string()])
                .args(["--tls-self-signed-for", "127.0.0.1,localhost"])
                .arg("--tls-ca-out")
                .arg(&ca_file)
                .args(["--cloud", "azure", "--provisioner", provisioner])
                .args(client_auth(cluster)?)
                .env("RUST_LOG", "info")
                // Its Kubernetes client reads the ConfigMaps named in tuning.config.
                .env("KUBECONFIG", cluster.kubeconfig())
                .envs(env.iter().copied()),
            &dir.join("webhook.log"),
        )?;
        let mut hook = Self {
            cluster,
            child: Some(child),
            name: name.clone(),
            health_port,
            dir,
        };
        wait_for(
            "kaito-webhook /readyz",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                if let Some(status) = hook
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    bail!("kaito-webhook exited with {status}: {}", hook.log_tail());
                }
                Ok(hook
                    .http_get("/readyz")
                    .ok()
                    .filter(|(code, _)| *code == 200)
                    .map(|_| ()))
            },
        )?;
        let ca = std::fs::read(&ca_file).context("the webhook wrote no CA file")?;
        let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca);

        cluster.kubectl_ok(["label", "namespace", ns.name(), &format!("{LABEL}={name}")])?;
        for (kind, webhook, path) in [
            (
                "MutatingWebhookConfiguration",
                "mutate.workspace.kaito.sh",
                "/mutate",
            ),
            (
                "ValidatingWebhookConfiguration",
                "validate.workspace.kaito.sh",
                "/validate",
            ),
        ] {
            cluster.apply(&format!(
                r#"apiVersion: admissionregistration.k8s.io/v1
kind: {kind}
metadata:
  name: {name}
webhooks:
- name: {webhook}
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 10
  clientConfig:
    url: https://127.0.0.1:{port}{path}
    caBundle: {ca_bundle}
  namespaceSelector:
    matchLabels:
      {LABEL}: {name}
  rules:
  - apiGroups: ["kaito.sh"]
    apiVersions: ["v1alpha1", "v1beta1"]
    operations: ["CREATE", "UPDATE"]
    resources: ["workspaces"]
    scope: Namespaced
"#
            ))?;
        }

        // The apiserver picks webhook configurations up asynchronously: wait until both answer.
        let probe = "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata:\n  name: probe\n\
                     resource:\n  instanceType: Standard_NC6s_v3\n  \
                     labelSelector:\n    matchLabels:\n      apps: probe\n\
                     inference:\n  preset:\n    name: phi-3-mini-4k-instruct\n";
        let bad_probe = probe.replace("phi-3-mini-4k-instruct", "no-such-model");
        wait_for(
            "the webhook configurations to take effect",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || {
                let out = ns.server_dry_run(probe)?;
                if !out.success() {
                    return Ok(None);
                }
                let obj: serde_json::Value = serde_json::from_str(&out.stdout)?;
                if obj["resource"]["count"] != 1 {
                    return Ok(None);
                }
                let out = ns.server_dry_run(&bad_probe)?;
                Ok(
                    (!out.success() && out.stderr.contains("validate.workspace.kaito.sh"))
                        .then_some(()),
                )
            },
        )
        .with_context(|| hook.log_tail())?;
        Ok(hook)
    }

    /// `GET path` on its health/metrics port: the status code and the body.
    pub fn http_get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.health_port, path)
    }

    /// Its whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path(), "webhook", 40)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("webhook.log")
    }

    fn unregister(&self) {
        for kind in [
            "mutatingwebhookconfiguration",
            "validatingwebhookconfiguration",
        ] {
            let _ = self
                .cluster
                .kubectl(["delete", kind, &self.name, "--ignore-not-found"]);
        }
    }

    /// Unregisters it, sends SIGTERM and returns the exit status once it stopped (graceful
    /// shutdown); after 15 s it is killed and this fails.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.unregister();
        let Some(mut child) = self.child.take() else {
            bail!("already stopped")
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("kaito-webhook did not stop within 15 s of SIGTERM")
    }
}

impl Drop for WebhookProcess<'_> {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
