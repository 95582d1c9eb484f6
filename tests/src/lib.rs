//! End-to-end test harness for kaito-rs.
//!
//! The tests in `tests/tests/` run against a real control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler) and kwok's simulated nodes, all local processes on
//! 127.0.0.1, started by `tests/cluster/cluster.sh`. [`Cluster::shared`] starts that cluster once
//! per test run, or reuses a healthy one: `cluster.sh up` holds a file lock, so test binaries
//! running at the same time share one cluster. Each test gets its own namespace
//! ([`Cluster::namespace`]), deleted when the test ends.
//!
//! These tests are a separate tier: every one is `#[ignore]`d, so `cargo test --workspace`
//! only lists them as ignored. `tests/e2e.sh` builds the binaries, starts a cluster, runs them
//! with `--include-ignored` and tears the cluster down.
//!
//! Environment: `KAITO_CLUSTER_DIR` picks the cluster (state dir; see `cluster.sh`),
//! `KAITO_E2E_KEEP_NAMESPACES=1` keeps the test namespaces for debugging.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod chart;
pub mod container;
pub mod docs;
pub mod hub;
pub mod processes;
pub mod registry;

pub use processes::{ControllerProcess, WebhookProcess, log_tail, no_proxy, spawn_logged};

/// How long one kubectl (or script) call may take before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// Environment variables that must not route loopback traffic through a proxy.
const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// One of the workspace's own binaries (`kaito-webhook`, `kaito-controller`, `kubectl-kaito`,
/// `kaito-runtime`, ...): `$<env>` when set, else the file of that name beside the running test
/// binary's profile directory (`target/debug/`). The tests never build it themselves:
/// `tests/e2e.sh` runs `cargo build --workspace --bins` once before them, so every binary has
/// the same features as in `cargo test --workspace` and nothing is compiled twice.
pub fn workspace_bin(name: &str, env: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    // A test runs from target/<profile>/deps/<test binary>.
    let exe = std::env::current_exe().context("locating the test binary")?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("the test binary is not in a cargo target directory")?;
    let bin = profile_dir.join(name);
    if !bin.is_file() {
        bail!(
            "{} does not exist: build the binaries first with `cargo build --workspace --bins` \
             (tests/e2e.sh does), or point {env} at one",
            bin.display()
        );
    }
    Ok(bin)
}

/// A free TCP port on 127.0.0.1 (for a process a test starts).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A plain HTTP/1.1 request to `127.0.0.1:port` (`Connection: close`): the status code and
/// the body. `json` is sent as an `application/json` body.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    json: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    s.set_read_timeout(Some(timeout))?;
    let body = json.unwrap_or("");
    let content = if json.is_some() {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    } else {
        String::new()
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{content}\r\n{body}"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .with_context(|| format!("reading the answer to {method} {path}"))?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// `GET path` on `127.0.0.1:port` with a 5 s timeout: the status code and the body.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    http_request(port, "GET", path, None, Duration::from_secs(5))
}

/// The cluster the tests run against: the running one named by `KAITO_CLUSTER_DIR` (as
/// `tests/e2e.sh` starts it), read with `cluster.sh env` rather than a second `up`, else
/// [`Cluster::shared`].
pub fn running_cluster() -> &'static Cluster {
    static RUNNING: OnceLock<Option<Cluster>> = OnceLock::new();
    let running = RUNNING.get_or_init(|| {
        let dir = std::env::var("KAITO_CLUSTER_DIR").ok()?;
        Path::new(&dir)
            .join("kubeconfig")
            .exists()
            .then(|| Cluster::from_script().ok())
            .flatten()
    });
    match running {
        Some(c) => c,
        None => Cluster::shared(),
    }
}

/// [`running_cluster`] with the kaito CRDs installed.
pub fn running_cluster_with_crds() -> Result<&'static Cluster> {
    let cluster = running_cluster();
    cluster.install_kaito_crds()?;
    Ok(cluster)
}

/// Path of the cluster script.
pub fn cluster_script() -> PathBuf {
    repo_root().join("tests/cluster/cluster.sh")
}

/// What a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Stdout if the command succeeded, otherwise an error carrying its stderr.
    pub fn ok(self) -> Result<String> {
        if self.success() {
            Ok(self.stdout)
        } else {
            bail!(
                "`{}` failed ({}):\nstderr: {}\nstdout: {}",
                self.command,
                self.status,
                self.stderr.trim(),
                self.stdout.trim()
            )
        }
    }
}

/// Runs `cmd`, feeding `stdin` if given, and kills it after `timeout`.
pub fn run_command(mut cmd: Command, stdin: Option<&str>, timeout: Duration) -> Result<CmdOutput> {
    let command = format!("{cmd:?}");
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {command}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("stdin pipe")?;
        let input = input.to_owned();
        std::thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
    }
    let mut out_pipe = child.stdout.take().context("stdout pipe")?;
    let mut err_pipe = child.stderr.take().context("stderr pipe")?;
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out_pipe.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err_pipe.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{command}` did not finish within {timeout:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    Ok(CmdOutput {
        command,
        status,
        stdout,
        stderr,
    })
}

/// Polls `f` every `interval` until it yields `Some`, an error, or `timeout` passes.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(interval);
    }
}

/// A name no other test of this run (or of a run beside it) uses: `prefix-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut prefix: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    prefix.truncate(40);
    let prefix = prefix.trim_matches('-');
    format!(
        "{prefix}-{:x}{:x}-{n}",
        std::process::id() & 0xffff,
        nanos & 0xfff
    )
}

/// The local cluster, as `cluster.sh up` left it.
#[derive(Debug, Clone)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Cluster {
    /// Starts the local cluster, or reuses the healthy one in `KAITO_CLUSTER_DIR` (default
    /// `~/.cache/kaito-rs/run/default`), once per test binary. Panics with the script's output
    /// when the cluster cannot be started, which fails the calling test.
    pub fn shared() -> &'static Cluster {
        static CLUSTER: OnceLock<std::result::Result<Cluster, String>> = OnceLock::new();
        match CLUSTER.get_or_init(|| Cluster::up().map_err(|e| format!("{e:#}"))) {
            Ok(c) => c,
            Err(e) => panic!("the local cluster is not available: {e}"),
        }
    }

    /// Runs `cluster.sh up` (idempotent and locked) and reads where the cluster lives.
    pub fn up() -> Result<Cluster> {
        let started = Instant::now();
        // Starting from scratch may build the binaries first; give it time.
        let mut cmd = Command::new("bash");
        cmd.arg(cluster_script()).arg("up");
        let out = run_command(cmd, None, Duration::from_secs(3600))?;
        let log = out.stderr.clone();
        out.ok().context("tests/cluster/cluster.sh up failed")?;
        let cluster = Cluster::from_script()?;
        eprintln!(
            "[kaito-e2e] cluster ready after {:.1}s (state {}):\n{}",
            started.elapsed().as_secs_f64(),
            cluster.dir.display(),
            log.trim_end()
        );
        Ok(cluster)
    }

    /// Reads the cluster's paths from `cluster.sh`, without starting anything.
    pub fn from_script() -> Result<Cluster> {
        let script = |arg: &str| -> Result<PathBuf> {
            let mut cmd = Command::new("bash");
            cmd.arg(cluster_script()).arg(arg);
            let out = run_command(cmd, None, COMMAND_TIMEOUT)?.ok()?;
            let line = out.lines().last().unwrap_or_default().trim().to_owned();
            if line.is_empty() {
                bail!("cluster.sh {arg} printed nothing");
            }
            Ok(PathBuf::from(line))
        };
        Ok(Cluster {
            dir: script("dir")?,
            bin: script("bin")?,
            kubeconfig: script("kubeconfig")?,
        })
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The directory of the control-plane binaries (kubectl, helm, ...).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The cluster's state dir.
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// A `kubectl` command for this cluster, to be run with [`run_command`] or spawned.
    pub fn kubectl_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args);
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        cmd.env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost");
        cmd
    }

    /// Runs kubectl with `args`; the result has stdout, stderr and the exit status.
    pub fn kubectl<I, S>(&self, args: I) -> Result<CmdOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        run_command(self.kubectl_command(args), None, COMMAND_TIMEOUT)
    }

    /// Runs kubectl with `args` and `stdin` as its standard input.
    pub fn kubectl_stdin<I, S>(&self, args: I, stdin: &str) -> Result<CmdOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        run_command(self.kubectl_command(args), Some(stdin), COMMAND_TIMEOUT)
    }

    /// Runs kubectl and returns its stdout, or an error with its stderr.
    pub fn kubectl_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.kubectl(args)?.ok()
    }

    /// `kubectl get ... -o json`, parsed.
    pub fn get_json<I, S>(&self, args: I) -> Result<serde_json::Value>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["get".into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        all.push("-o".into());
        all.push("json".into());
        let out = self.kubectl_ok(all)?;
        serde_json::from_str(&out).context("kubectl printed no JSON")
    }

    /// `kubectl apply -f -` of a YAML document (or several).
    pub fn apply(&self, yaml: &str) -> Result<String> {
        self.kubectl_stdin(["apply", "-f", "-"], yaml)?.ok()
    }

    /// Creates a namespace of its own for one test; it is deleted when the value is dropped.
    pub fn namespace(&self, prefix: &str) -> Result<TestNamespace<'_>> {
        let name = unique_name(&format!("e2e-{prefix}"));
        self.kubectl_ok(["create", "namespace", &name])?;
        // Pods need the namespace's default ServiceAccount (created by the controller-manager).
        wait_for(
            "the namespace's default ServiceAccount",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                Ok(self
                    .kubectl(["get", "serviceaccount", "default", "-n", &name])?
                    .success()
                    .then_some(()))
            },
        )?;
        Ok(TestNamespace {
            cluster: self,
            name,
        })
    }

    /// Adds a simulated GPU node (`cluster.sh add-gpu-node`) and waits until it is Ready; it is
    /// deleted when the value is dropped.
    pub fn add_gpu_node(&self, node: &GpuNode) -> Result<NodeGuard<'_>> {
        let mut cmd = Command::new("bash");
        cmd.arg(cluster_script())
            .arg("add-gpu-node")
            .arg(&node.name)
            .args(&node.args)
            .env("KAITO_CLUSTER_DIR", &self.dir)
            .env("KAITO_CLUSTER_BIN", &self.bin);
        run_command(cmd, None, COMMAND_TIMEOUT)?.ok()?;
        Ok(NodeGuard {
            cluster: self,
            name: node.name.clone(),
        })
    }

    /// Installs the project's CRDs (`charts/kaito/crds/*.yaml`) with server-side apply and waits
    /// until each is Established. Returns the CRD names.
    pub fn install_kaito_crds(&self) -> Result<Vec<String>> {
        let files = kaito_crd_files()?;
        let mut names = Vec::new();
        for file in &files {
            let out = self.kubectl_ok([
                "apply",
                "--server-side",
                "--force-conflicts",
                "-o",
                "name",
                "-f",
                &file.display().to_string(),
            ])?;
            names.extend(
                out.lines()
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty()),
            );
        }
        if names.is_empty() {
            bail!("charts/kaito/crds/*.yaml created nothing");
        }
        let mut args = vec![
            "wait".to_owned(),
            "--for=condition=Established".to_owned(),
            "--timeout=60s".to_owned(),
        ];
        args.extend(names.iter().cloned());
        self.kubectl_ok(args)?;
        Ok(names)
    }
}

/// The condition of type `type_` among `conds` (a Workspace's or a pod's
/// `status.conditions`).
pub fn condition(conds: &[serde_json::Value], type_: &str) -> Option<serde_json::Value> {
    conds.iter().find(|c| c["type"] == type_).cloned()
}

/// The YAML files under `charts/kaito/crds/`, sorted.
pub fn kaito_crd_files() -> Result<Vec<PathBuf>> {
    yaml_files(&repo_root().join("charts/kaito/crds"))
}

/// The seed example `examples/<file>` as YAML with its name, node count (1) and
/// `labelSelector` (`apps: <label>`) replaced: every field set, for clusters where no webhook
/// defaults it.
pub fn seed_workspace(file: &str, name: &str, label: &str) -> Result<String> {
    let path = repo_root().join("examples").join(file);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let mut v: serde_json::Value = serde_yaml::from_str(&text)?;
    v["metadata"]["name"] = serde_json::Value::from(name);
    v["resource"]["count"] = serde_json::Value::from(1);
    v["resource"]["labelSelector"] = serde_json::json!({"matchLabels": {"apps": label}});
    Ok(serde_yaml::to_string(&v)?)
}

/// The seed examples, `examples/**/*.yaml` (the guides' paths: `examples/inference/...`,
/// `examples/fine-tuning/...`), sorted.
pub fn example_files() -> Result<Vec<PathBuf>> {
    let root = repo_root().join("examples");
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(&root).with_context(|| format!("cannot read {}", root.display()))?
    {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(yaml_files(&path)?);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("no *.yaml files under {}", root.display());
    }
    Ok(files)
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no *.yaml files in {}", dir.display());
    }
    Ok(files)
}

/// A namespace owned by one test.
#[derive(Debug)]
pub struct TestNamespace<'a> {
    cluster: &'a Cluster,
    name: String,
}

impl TestNamespace<'_> {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster it lives in.
    pub fn cluster(&self) -> &Cluster {
        self.cluster
    }

    fn with_ns<I, S>(&self, args: I) -> Vec<std::ffi::OsString>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["-n".into(), self.name.clone().into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        all
    }

    /// kubectl in this namespace.
    pub fn kubectl<I, S>(&self, args: I) -> Result<CmdOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cluster.kubectl(self.with_ns(args))
    }

    /// kubectl in this namespace; stdout, or an error with stderr.
    pub fn kubectl_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cluster.kubectl_ok(self.with_ns(args))
    }

    /// A kubectl command in this namespace, to spawn (e.g. `port-forward`).
    pub fn kubectl_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cluster.kubectl_command(self.with_ns(args))
    }

    /// `kubectl get ... -o json` in this namespace.
    pub fn get_json<I, S>(&self, args: I) -> Result<serde_json::Value>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cluster.get_json(self.with_ns(args))
    }

    /// The status conditions of Workspace `name` in this namespace (none yet: empty).
    pub fn workspace_conditions(&self, name: &str) -> Result<Vec<serde_json::Value>> {
        let ws = self.get_json(["workspace", name])?;
        Ok(ws["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Whether Workspace `name` has condition `type_` with status `True`.
    pub fn workspace_condition_true(&self, name: &str, type_: &str) -> Result<bool> {
        Ok(self
            .workspace_conditions(name)?
            .iter()
            .any(|c| c["type"] == type_ && c["status"] == "True"))
    }

    /// `kubectl apply --dry-run=server -o json -f -` in this namespace: the object as admission
    /// (defaulting webhooks included) would store it on stdout, or the refusal on stderr.
    pub fn server_dry_run(&self, yaml: &str) -> Result<CmdOutput> {
        self.cluster.kubectl_stdin(
            self.with_ns(["apply", "--dry-run=server", "-o", "json", "-f", "-"]),
            yaml,
        )
    }

    /// `kubectl apply -f -` in this namespace.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        self.cluster
            .kubectl_stdin(self.with_ns(["apply", "-f", "-"]), yaml)?
            .ok()
    }
}

impl Drop for TestNamespace<'_> {
    fn drop(&mut self) {
        if std::env::var_os("KAITO_E2E_KEEP_NAMESPACES").is_some_and(|v| v == "1") {
            eprintln!("[kaito-e2e] keeping namespace {}", self.name);
            return;
        }
        let _ = self.cluster.kubectl([
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}

/// A simulated GPU node to add with [`Cluster::add_gpu_node`]; see `cluster.sh add-gpu-node`.
#[derive(Debug, Clone)]
pub struct GpuNode {
    name: String,
    args: Vec<String>,
}

impl GpuNode {
    /// A node like an AKS `Standard_NC6s_v3` one (1 V100, taint `sku=gpu:NoSchedule`).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            args: Vec::new(),
        }
    }

    /// A `Standard_NC6s_v3` node named `<prefix>-<unique>` with the label `apps=<label>`: the
    /// node a seed workspace whose `resource.labelSelector` asks for `apps: <label>` selects.
    pub fn for_apps(prefix: &str, label: &str) -> Self {
        Self::new(unique_name(prefix))
            .sku("Standard_NC6s_v3")
            .label("apps", label)
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn arg(mut self, flag: &str, value: impl ToString) -> Self {
        self.args.push(flag.to_owned());
        self.args.push(value.to_string());
        self
    }

    /// VM size (`node.kubernetes.io/instance-type`); picks the SKU's GPUs, CPU and memory.
    pub fn sku(self, sku: &str) -> Self {
        self.arg("--sku", sku)
    }

    /// Number of GPUs (`nvidia.com/gpu` capacity and `nvidia.com/gpu.count`).
    pub fn gpus(self, n: u32) -> Self {
        self.arg("--gpus", n)
    }

    /// Memory of one GPU in MiB (`nvidia.com/gpu.memory`).
    pub fn gpu_memory_mib(self, mib: u64) -> Self {
        self.arg("--gpu-memory-mib", mib)
    }

    /// GPU product (`nvidia.com/gpu.product`).
    pub fn product(self, product: &str) -> Self {
        self.arg("--product", product)
    }

    /// CUDA compute capability, `MAJOR.MINOR`.
    pub fn compute_capability(self, cc: &str) -> Self {
        self.arg("--cc", cc)
    }

    /// AKS agent pool (`kubernetes.azure.com/agentpool`).
    pub fn agentpool(self, pool: &str) -> Self {
        self.arg("--agentpool", pool)
    }

    /// An extra label.
    pub fn label(self, key: &str, value: &str) -> Self {
        self.arg("--label", format!("{key}={value}"))
    }

    /// A taint `key=value:Effect`; giving any replaces the default `sku=gpu:NoSchedule`.
    pub fn taint(self, taint: &str) -> Self {
        self.arg("--taint", taint)
    }

    /// No taints at all.
    pub fn no_taint(mut self) -> Self {
        self.args.push("--no-taint".to_owned());
        self
    }
}

/// A node added by a test; deleted on drop.
#[derive(Debug)]
pub struct NodeGuard<'a> {
    cluster: &'a Cluster,
    name: String,
}

impl NodeGuard<'_> {
    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for NodeGuard<'_> {
    fn drop(&mut self) {
        let _ = self.cluster.kubectl([
            "delete",
            "node",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}

/// Whether `actual` holds every value of `expected` (objects: every key, recursively; arrays:
/// same length, element-wise; scalars: equal). Returns the path of the first difference.
pub fn json_subset(expected: &serde_json::Value, actual: &serde_json::Value) -> Option<String> {
    fn go(e: &serde_json::Value, a: &serde_json::Value, path: &str) -> Option<String> {
        use serde_json::Value;
        match (e, a) {
            (Value::Object(e), Value::Object(a)) => e.iter().find_map(|(k, ev)| match a.get(k) {
                Some(av) => go(ev, av, &format!("{path}.{k}")),
                None => Some(format!("{path}.{k}: missing")),
            }),
            (Value::Array(e), Value::Array(a)) => {
                if e.len() != a.len() {
                    return Some(format!("{path}: {} items, stored {}", e.len(), a.len()));
                }
                e.iter()
                    .zip(a)
                    .enumerate()
                    .find_map(|(i, (ev, av))| go(ev, av, &format!("{path}[{i}]")))
            }
            _ if e == a => None,
            _ => Some(format!("{path}: expected {e}, stored {a}")),
        }
    }
    go(expected, actual, "")
}

/// The column names of a `kubectl get` table's header line.
pub fn table_header(table: &str) -> Vec<String> {
    table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Whether `wanted` appears in `items` in the same order (other items may stand between).
pub fn in_order(items: &[String], wanted: &[&str]) -> bool {
    let mut it = items.iter();
    wanted.iter().all(|w| it.any(|i| i == w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_subset_finds_missing_and_changed_values() {
        let stored = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x", "extra": true});
        assert_eq!(json_subset(&json!({"a": {"b": 1}}), &stored), None);
        assert_eq!(
            json_subset(&json!({"a": {"c": [1, 2]}, "d": "x"}), &stored),
            None
        );
        assert_eq!(
            json_subset(&json!({"a": {"b": 2}}), &stored).as_deref(),
            Some(".a.b: expected 2, stored 1")
        );
        assert_eq!(
            json_subset(&json!({"q": 1}), &stored).as_deref(),
            Some(".q: missing")
        );
        assert_eq!(
            json_subset(&json!({"a": {"c": [1]}}), &stored).as_deref(),
            Some(".a.c: 1 items, stored 2")
        );
        // A number is not its string.
        assert!(json_subset(&json!({"d": 1}), &json!({"d": "1"})).is_some());
    }

    #[test]
    fn header_and_order() {
        let t = "NAME   INSTANCE           RESOURCEREADY   AGE\nws     Standard_NC6s_v3   True            5s\n";
        let h = table_header(t);
        assert_eq!(h, ["NAME", "INSTANCE", "RESOURCEREADY", "AGE"]);
        assert!(in_order(&h, &["NAME", "RESOURCEREADY", "AGE"]));
        assert!(!in_order(&h, &["AGE", "NAME"]));
        assert!(!in_order(&h, &["NAME", "WORKSPACEREADY"]));
    }

    #[test]
    fn unique_names_are_dns_labels_and_differ() {
        let a = unique_name("Seed_Examples");
        let b = unique_name("Seed_Examples");
        assert_ne!(a, b);
        for n in [&a, &b] {
            assert!(n.len() <= 63, "{n}");
            assert!(n.starts_with("seed-examples-"), "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
        }
    }

    #[test]
    fn run_command_captures_output_status_and_stdin() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cat; echo err >&2; exit 3"]);
        let out = run_command(cmd, Some("hello"), Duration::from_secs(30)).expect("runs");
        assert_eq!(out.stdout, "hello");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.status.code(), Some(3));
        assert!(out.ok().is_err());
    }

    #[test]
    fn run_command_kills_after_timeout() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let started = Instant::now();
        let err = run_command(cmd, None, Duration::from_millis(300)).expect_err("times out");
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn repo_files_are_found() {
        assert!(cluster_script().is_file());
        let examples = example_files().expect("examples/**/*.yaml");
        assert!(examples.len() >= 3, "{examples:?}");
    }
}
