//! A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on a free
//! loopback port, plain http, htpasswd (bcrypt) basic auth for [`USER`] / [`PASSWORD`],
//! storage and config in a temp dir; killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;

/// The registry's one user.
pub const USER: &str = "kaito";
/// [`USER`]'s password.
pub const PASSWORD: &str = "tr4in-me";

/// The registry binary, or None (after printing a skip line) when it is not installed.
/// With `KAITO_REQUIRE_REGISTRY=1` (the test command sets it) a missing binary is an error.
pub fn binary() -> Result<Option<PathBuf>> {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("docker-registry"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if let Some(found) = std::iter::once(PathBuf::from("/usr/bin/docker-registry"))
        .chain(on_path)
        .find(|c| c.is_file())
    {
        return Ok(Some(found));
    }
    if std::env::var("KAITO_REQUIRE_REGISTRY").as_deref() == Ok("1") {
        bail!("docker-registry not found: install it (apt-get install docker-registry)");
    }
    eprintln!("SKIP: docker-registry not installed (apt-get install docker-registry)");
    Ok(None)
}

/// A running registry.
pub struct Registry {
    child: Child,
    host: String,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts a registry, or returns None when none is installed (see [`binary`]).
    pub fn start() -> Result<Option<Registry>> {
        let Some(binary) = binary()? else {
            return Ok(None);
        };
        Self::start_with(&binary).map(Some)
    }

    /// Starts `binary` and waits until `/v2/` asks for credentials.
    pub fn start_with(binary: &Path) -> Result<Registry> {
        let dir = tempfile::tempdir()?;
        let port = crate::free_port()?;
        let hash = bcrypt::hash_with_result(PASSWORD, 5)?.format_for_version(bcrypt::Version::TwoA);
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("{USER}:{hash}\n"))?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: kaito-test\n    path: {}\n",
                dir.path().join("storage").display(),
                htpasswd.display()
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut registry = Registry {
            child,
            host: format!("127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !registry.asks_for_credentials() {
            if let Some(status) = registry.child.try_wait()? {
                bail!("docker-registry exited ({status}): {}", registry.log());
            }
            if Instant::now() > deadline {
                bail!("docker-registry not ready after 20 s: {}", registry.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(registry)
    }

    /// `GET /v2/` answers 401.
    fn asks_for_credentials(&self) -> bool {
        let probe = || -> std::io::Result<String> {
            let mut s = TcpStream::connect(&self.host)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            write!(s, "GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.host)?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head)?;
            Ok(String::from_utf8_lossy(&head).into_owned())
        };
        probe().is_ok_and(|line| line.ends_with(" 401"))
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Writes `dir/.dockerconfigjson` for [`USER`] with `password`, as Kubernetes stores it in
    /// a `kubernetes.io/dockerconfigjson` Secret (`kubectl create secret docker-registry`
    /// writes username, password and auth).
    pub fn docker_config(&self, dir: &Path, password: &str) -> Result<PathBuf> {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
        let json = serde_json::json!({"auths": {self.host.clone(): {
            "username": USER, "password": password, "auth": auth}}});
        let path = dir.join(".dockerconfigjson");
        std::fs::write(&path, json.to_string())?;
        Ok(path)
    }
}
