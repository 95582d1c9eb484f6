//! Helpers of the integration tests: generated models and `kaito-runtime` child processes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kaito_runtime::testmodel::{self, Arch, ModelSpec};

/// Seed of every generated test model.
pub const SEED: u64 = 7;

/// A fresh scratch directory under the target tmp dir.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "kaito-runtime-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes the tiny model of `arch` (and its adapter) into `dir`; returns (model, adapter) dirs.
pub fn tiny_model(dir: &Path, arch: Arch) -> (PathBuf, PathBuf) {
    let spec = ModelSpec::tiny(arch, SEED);
    let model = dir.join("model");
    let adapter = dir.join("adapters").join("adapter-a");
    testmodel::write_model(&model, &spec).unwrap();
    testmodel::write_adapter(&adapter, &spec, 8, SEED).unwrap();
    (model, adapter)
}

/// A running `kaito-runtime` child process, killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    /// Starts `kaito-runtime` on a free loopback port with `args` and extra environment.
    pub fn start(model: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let cache = scratch("hub");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kaito-runtime"));
        cmd.arg("--model-dir")
            .arg(model)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--served-model-name",
                "tiny",
            ])
            .args(args)
            .env("HF_HUB_CACHE", &cache)
            .env("HF_HUB_OFFLINE", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if !args.contains(&"--adapters-dir") {
            cmd.args(["--adapters-dir", "/nonexistent-adapters"]);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn kaito-runtime");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("kaito-runtime exited before listening")
                .unwrap();
            if let Some(addr) = line.strip_prefix("kaito-runtime listening on ") {
                break addr.to_string();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            base: format!("http://{addr}"),
        }
    }

    /// The `host:port` the server listens on.
    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    /// URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Polls `/health` until it answers 200 (panics after `timeout`).
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("kaito-runtime exited while loading: {status}");
            }
            if let Ok(r) = client.get(self.url("/health")).send().await {
                if r.status() == 200 {
                    let body: serde_json::Value = r.json().await.unwrap();
                    assert_eq!(body, serde_json::json!({"status": "Healthy"}));
                    return;
                }
                assert_eq!(r.status(), 503, "health before ready must be 503");
            }
            assert!(
                Instant::now() < deadline,
                "model not ready after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit (panics after `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "kaito-runtime did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Greedy `/chat` body with a fixed number of new tokens.
pub fn greedy_chat(prompt: &str, new_tokens: usize) -> serde_json::Value {
    serde_json::json!({
        "prompt": prompt,
        "return_full_text": false,
        "generate_kwargs": {"do_sample": false, "max_new_tokens": new_tokens}
    })
}

/// Parses an SSE body into the `data:` payloads, checking the framing.
pub fn sse_data(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    for event in body.split("\n\n") {
        if event.trim().is_empty() {
            continue;
        }
        let mut data = Vec::new();
        for line in event.lines() {
            if let Some(d) = line
                .strip_prefix("data: ")
                .or_else(|| line.strip_prefix("data:"))
            {
                data.push(d.to_string());
            } else {
                assert!(
                    line.starts_with(':') || line.is_empty(),
                    "unexpected SSE line {line:?}"
                );
            }
        }
        if !data.is_empty() {
            out.push(data.join("\n"));
        }
    }
    assert!(
        body.ends_with("\n\n"),
        "SSE body must end with a blank line"
    );
    out
}

/// Resident memory of process `pid` in KiB (Linux; `None` elsewhere).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A raw HTTP/1.1 POST of `body` (JSON) to `path`.
pub fn raw_post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Opens a connection with a small receive buffer, sends `request` and never reads: a client
/// that stopped reading. Keep the stream alive to keep the connection open.
pub async fn stalled_reader(addr: &str, request: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}
