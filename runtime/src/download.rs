//! Weights download: a preset's Hugging Face repository, at its pinned revision, into the
//! serving pod's weights volume before the model loads.
//!
//! It speaks the hub's HTTP protocol (what `huggingface_hub` and the `hf-hub` crate speak):
//!
//! 1. `GET {endpoint}/api/models/{repo}/revision/{revision}` → the commit (`sha`) and the file
//!    list (`siblings[].rfilename`);
//! 2. `HEAD {endpoint}/{repo}/resolve/{commit}/{file}`, redirects not followed → the size
//!    (`X-Linked-Size` or `Content-Length`) and the hash in the ETag (`X-Linked-Etag` or `ETag`):
//!    the sha256 of the file for LFS files, its git blob sha1 otherwise;
//! 3. `GET` of the file (following `Location` by hand, the token sent only to the hub's own
//!    origin), with `Range: bytes=N-` when a partial file of N bytes is there from a cut
//!    connection or an earlier attempt.
//!
//! Every file is checked against its size and hash before it is renamed into place, and a file
//! already there (a node-local cache, a restarted container) is hashed again rather than
//! trusted. Transport errors, 5xx and 429 are retried with backoff, resuming where the data
//! stopped. Progress is logged (percent, bytes, rate, time left) and exported as metrics.
//!
//! Which files: for a GGUF preset the one file named; otherwise `config.json`, the tokenizer
//! files, `generation_config.json` and `chat_template.jinja` when present, and the safetensors
//! weights — the shards listed by `model.safetensors.index.json` when there is one.
//! [`select_files`] and [`shards_of_index`] are pure and unit-tested.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use reqwest::header::{self, HeaderMap};
use reqwest::{StatusCode, Url};
use sha1::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where the weights come from.
#[derive(Clone, Debug)]
pub struct HubSource {
    /// The hub's base URL (`HF_ENDPOINT`; `https://huggingface.co` by default).
    pub endpoint: String,
    /// `org/name`.
    pub repo: String,
    /// Branch, tag or commit; a commit pins the weights.
    pub revision: String,
    /// Access token (`HF_TOKEN`), for gated or private repositories.
    pub token: Option<String>,
    /// The one GGUF file to fetch, instead of the safetensors layout.
    pub gguf_file: Option<String>,
}

/// How downloads retry.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request (the first one included).
    pub attempts: u32,
    /// Wait before the first retry; doubled each time.
    pub first_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Why the download failed. [`DownloadError::reason`] is the machine-readable part the
/// controller turns into a Workspace condition.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// 401/403: the repository is gated or private and the token is missing or has no access.
    #[error(
        "the hub answered {status} for {repo}: {}",
        if *token_set {
            "the token in HF_TOKEN has no access to this repository (accept the model's license on Hugging Face with the token's account, or use another token)"
        } else {
            "the repository is gated or private and HF_TOKEN is not set"
        }
    )]
    Unauthorized {
        /// The repository.
        repo: String,
        /// 401 or 403.
        status: u16,
        /// Whether a token was sent.
        token_set: bool,
    },
    /// 404: no such repository, revision or file.
    #[error("{what} was not found on the hub ({url}): check the repository and revision")]
    NotFound {
        /// What was looked for.
        what: String,
        /// The URL asked.
        url: String,
    },
    /// The repository does not hold what the runtime needs.
    #[error("{repo}@{revision}: {problem}")]
    Layout {
        /// The repository.
        repo: String,
        /// The revision.
        revision: String,
        /// What is missing.
        problem: String,
    },
    /// A file's bytes do not match the size or hash the hub gave, after every retry.
    #[error("{file}: {problem} after {attempts} attempts; the hub or a proxy is serving bad data")]
    Integrity {
        /// The file.
        file: String,
        /// What did not match.
        problem: String,
        /// Attempts made.
        attempts: u32,
    },
    /// Any other HTTP status, or a transport error, after every retry.
    #[error("{url}: {problem} (after {attempts} attempts)")]
    Transport {
        /// The URL.
        url: String,
        /// What went wrong last.
        problem: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The hub answered something that is not its protocol.
    #[error("{url}: unexpected answer: {problem}")]
    Protocol {
        /// The URL.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// A local file could not be written or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl DownloadError {
    /// The condition reason: `ModelDownloadUnauthorized`, `ModelNotFound` or
    /// `ModelDownloadFailed`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } => "ModelDownloadUnauthorized",
            Self::NotFound { .. } | Self::Layout { .. } => "ModelNotFound",
            _ => "ModelDownloadFailed",
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Pure parts: which files, what the headers say.

/// Files the runtime needs from a repository holding `siblings`. For safetensors weights with
/// an index, the shards come from [`shards_of_index`] afterwards; this returns the index itself
/// among the files.
pub fn select_files(siblings: &[String], gguf_file: Option<&str>) -> Result<Vec<String>, String> {
    let has = |f: &str| siblings.iter().any(|s| s == f);
    if let Some(gguf) = gguf_file {
        if !has(gguf) {
            let ggufs: Vec<&str> = siblings
                .iter()
                .map(String::as_str)
                .filter(|s| s.ends_with(".gguf"))
                .collect();
            return Err(format!(
                "has no file {gguf} (GGUF files there: {})",
                if ggufs.is_empty() {
                    "none".to_string()
                } else {
                    ggufs.join(", ")
                }
            ));
        }
        return Ok(vec![gguf.to_string()]);
    }
    let mut files = Vec::new();
    for required in ["config.json", "tokenizer.json"] {
        if !has(required) {
            return Err(format!("has no {required}"));
        }
        files.push(required.to_string());
    }
    for optional in [
        "tokenizer_config.json",
        "generation_config.json",
        "chat_template.jinja",
    ] {
        if has(optional) {
            files.push(optional.to_string());
        }
    }
    if has(SAFETENSORS_INDEX) {
        files.push(SAFETENSORS_INDEX.to_string());
    } else if has("model.safetensors") {
        files.push("model.safetensors".to_string());
    } else {
        let top_level: Vec<String> = siblings
            .iter()
            .filter(|s| !s.contains('/') && s.ends_with(".safetensors"))
            .cloned()
            .collect();
        if top_level.is_empty() {
            return Err("has no safetensors weights (model.safetensors or an index)".into());
        }
        files.extend(top_level);
    }
    Ok(files)
}

/// The index of sharded safetensors weights.
pub const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";

/// The shard files a `model.safetensors.index.json` names (its `weight_map` values), sorted.
pub fn shards_of_index(index: &[u8]) -> Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let index: Index = serde_json::from_slice(index)
        .map_err(|e| format!("{SAFETENSORS_INDEX} is not a safetensors index: {e}"))?;
    let shards: BTreeSet<String> = index.weight_map.into_values().collect();
    if shards.is_empty() {
        return Err(format!("{SAFETENSORS_INDEX} lists no shards"));
    }
    if let Some(bad) = shards
        .iter()
        .find(|s| s.contains("..") || s.starts_with('/') || !s.ends_with(".safetensors"))
    {
        return Err(format!(
            "{SAFETENSORS_INDEX} names an unsafe shard path {bad:?}"
        ));
    }
    Ok(shards.into_iter().collect())
}

/// What the hub says a file's bytes hash to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// An LFS file: the sha256 of its content (hex).
    Sha256(String),
    /// A regular git file: its git blob sha1 (hex).
    GitSha1(String),
    /// The ETag is neither: only the size is checked.
    SizeOnly,
}

/// Reads an ETag (`"…"`, `W/"…"`) as the hub's hash of the file.
pub fn expected_from_etag(etag: &str) -> Expected {
    let e = etag.trim().trim_start_matches("W/").trim_matches('"');
    let hex = e.bytes().all(|b| b.is_ascii_hexdigit());
    match e.len() {
        64 if hex => Expected::Sha256(e.to_ascii_lowercase()),
        40 if hex => Expected::GitSha1(e.to_ascii_lowercase()),
        _ => Expected::SizeOnly,
    }
}

/// Size and hash of one remote file, from the `HEAD` of its resolve URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    /// Path in the repository.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Its hash.
    pub expected: Expected,
    /// Where its bytes are: the resolve URL or the redirect target.
    pub url: String,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Size and ETag from a resolve `HEAD`'s headers: the `X-Linked-*` headers of an LFS redirect
/// first, else `ETag` and `Content-Length`.
pub fn size_and_etag(headers: &HeaderMap) -> (Option<u64>, Option<String>) {
    let size = header_str(headers, "x-linked-size")
        .or_else(|| header_str(headers, header::CONTENT_LENGTH.as_str()))
        .and_then(|s| s.trim().parse().ok());
    let etag = header_str(headers, "x-linked-etag")
        .or_else(|| header_str(headers, header::ETAG.as_str()))
        .map(str::to_string);
    (size, etag)
}

/// `1.5 GiB`-style sizes for log lines.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

/// One progress log line: `42.0% 1.00 GiB of 2.38 GiB, 85.3 MB/s, about 17 s left`.
pub fn progress_line(done: u64, total: u64, fetched: u64, elapsed: Duration) -> String {
    let pct = if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    };
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        fetched as f64 / secs
    } else {
        0.0
    };
    let left = if rate > 0.0 {
        format!(
            "about {} s left",
            (total.saturating_sub(done) as f64 / rate).ceil()
        )
    } else {
        "time left unknown".to_string()
    };
    format!(
        "{pct:.1}% {} of {}, {:.1} MB/s, {left}",
        human_bytes(done),
        human_bytes(total),
        rate / 1e6
    )
}

// ---------------------------------------------------------------------------------------------
// Progress shared with the metrics and the log.

/// Bytes done and total: Prometheus metrics (registered by [`crate::metrics::Metrics`]) that
/// the log lines read too.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    /// Bytes of the selected files that are in place or downloaded so far.
    pub done: Gauge,
    /// Bytes of all selected files (known after the `HEAD`s).
    pub total: Gauge,
    /// Bytes fetched over the network.
    pub fetched: Counter,
    /// Retries made.
    pub retries: Counter,
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Progress {
    fn add_done(&self, n: u64) {
        self.done.inc_by(as_i64(n));
    }
    fn add(&self, n: u64) {
        self.add_done(n);
        self.fetched.inc_by(n);
    }
    fn take_back(&self, n: u64) {
        self.done.dec_by(as_i64(n));
    }
    fn add_total(&self, n: u64) {
        self.total.inc_by(as_i64(n));
    }
    fn done(&self) -> u64 {
        u64::try_from(self.done.get()).unwrap_or(0)
    }
    fn total(&self) -> u64 {
        u64::try_from(self.total.get()).unwrap_or(0)
    }
}

/// What a finished download left in the directory.
#[derive(Debug, Clone)]
pub struct Downloaded {
    /// The commit the revision resolved to.
    pub commit: String,
    /// Files in place, in download order.
    pub files: Vec<String>,
    /// Bytes fetched from the network (0 on a full cache hit).
    pub fetched_bytes: u64,
    /// Bytes that were already in place and verified.
    pub cached_bytes: u64,
}

// ---------------------------------------------------------------------------------------------
// The I/O shell.

/// Downloads the files the runtime needs from `source` into `dest`.
pub struct Downloader {
    client: reqwest::Client,
    source: HubSource,
    endpoint: Url,
    retry: RetryPolicy,
    progress: Progress,
}

enum Attempt<T> {
    Done(T),
    Retry(String),
}

impl Downloader {
    /// A downloader for `source`.
    pub fn new(
        source: HubSource,
        retry: RetryPolicy,
        progress: Progress,
    ) -> Result<Self, DownloadError> {
        let base = source.endpoint.trim_end_matches('/').to_string() + "/";
        let endpoint = Url::parse(&base).map_err(|e| DownloadError::Protocol {
            url: source.endpoint.clone(),
            problem: format!("HF_ENDPOINT is not a URL: {e}"),
        })?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("kaito-runtime/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DownloadError::Protocol {
                url: source.endpoint.clone(),
                problem: format!("HTTP client: {e}"),
            })?;
        Ok(Self {
            client,
            source,
            endpoint,
            retry,
            progress,
        })
    }

    fn url(&self, path: &str) -> Result<Url, DownloadError> {
        self.endpoint
            .join(path)
            .map_err(|e| DownloadError::Protocol {
                url: format!("{}{path}", self.endpoint),
                problem: e.to_string(),
            })
    }

    /// A request with the token when `url` is on the hub's own origin (never to a CDN it
    /// redirects to).
    fn request(&self, method: reqwest::Method, url: &Url) -> reqwest::RequestBuilder {
        let mut req = self.client.request(method, url.clone());
        if let Some(token) = &self.source.token
            && url.origin() == self.endpoint.origin()
        {
            req = req.bearer_auth(token);
        }
        req
    }

    fn unauthorized(&self, status: StatusCode) -> DownloadError {
        DownloadError::Unauthorized {
            repo: self.source.repo.clone(),
            status: status.as_u16(),
            token_set: self.source.token.is_some(),
        }
    }

    /// Runs `attempt` until it is done, fails for good, or the attempts are used up.
    async fn retrying<T, F, Fut>(&self, url: &str, mut attempt: F) -> Result<T, DownloadError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Attempt<T>, DownloadError>>,
    {
        let mut last = String::new();
        for n in 1..=self.retry.attempts {
            if n > 1 {
                let wait = self.retry.backoff(n - 1);
                self.progress.retries.inc();
                tracing::warn!(url, attempt = n, of = self.retry.attempts, problem = %last,
                    "download: retrying in {:.1} s", wait.as_secs_f64());
                tokio::time::sleep(wait).await;
            }
            match attempt().await? {
                Attempt::Done(v) => return Ok(v),
                Attempt::Retry(problem) => last = problem,
            }
        }
        Err(DownloadError::Transport {
            url: url.to_string(),
            problem: last,
            attempts: self.retry.attempts,
        })
    }

    /// Classifies a status that is not a success: retried, or a final error.
    fn status_error<T>(
        &self,
        status: StatusCode,
        url: &Url,
        what: &str,
    ) -> Result<Attempt<T>, DownloadError> {
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(self.unauthorized(status)),
            StatusCode::NOT_FOUND => Err(DownloadError::NotFound {
                what: what.to_string(),
                url: url.to_string(),
            }),
            s if s.is_server_error()
                || s == StatusCode::TOO_MANY_REQUESTS
                || s == StatusCode::REQUEST_TIMEOUT =>
            {
                Ok(Attempt::Retry(format!("HTTP {s}")))
            }
            s => Err(DownloadError::Transport {
                url: url.to_string(),
                problem: format!("HTTP {s}"),
                attempts: 1,
            }),
        }
    }

    /// The revision metadata call: the commit and the file list.
    pub async fn revision_info(&self) -> Result<(String, Vec<String>), DownloadError> {
        #[derive(serde::Deserialize)]
        struct Sibling {
            rfilename: String,
        }
        #[derive(serde::Deserialize)]
        struct Info {
            sha: String,
            #[serde(default)]
            siblings: Vec<Sibling>,
        }
        let url = self.url(&format!(
            "api/models/{}/revision/{}",
            self.source.repo, self.source.revision
        ))?;
        let what = format!("{}@{}", self.source.repo, self.source.revision);
        let info: Info = self
            .retrying(url.as_str(), || async {
                let resp = match self.request(reqwest::Method::GET, &url).send().await {
                    Ok(r) => r,
                    Err(e) => return Ok(Attempt::Retry(e.to_string())),
                };
                if !resp.status().is_success() {
                    return self.status_error(resp.status(), &url, &what);
                }
                match resp.json::<Info>().await {
                    Ok(info) => Ok(Attempt::Done(info)),
                    Err(e) => Err(DownloadError::Protocol {
                        url: url.to_string(),
                        problem: format!("not the hub's revision metadata: {e}"),
                    }),
                }
            })
            .await?;
        let pinned = self.source.revision.len() == 40
            && self.source.revision.bytes().all(|b| b.is_ascii_hexdigit());
        if pinned && !info.sha.eq_ignore_ascii_case(&self.source.revision) {
            return Err(DownloadError::Protocol {
                url: url.to_string(),
                problem: format!(
                    "asked for commit {} and got commit {}",
                    self.source.revision, info.sha
                ),
            });
        }
        Ok((
            info.sha,
            info.siblings.into_iter().map(|s| s.rfilename).collect(),
        ))
    }

    /// `HEAD` of a file's resolve URL at `commit`: its size, hash and where its bytes are.
    pub async fn remote_file(&self, commit: &str, name: &str) -> Result<RemoteFile, DownloadError> {
        let resolve = self.url(&format!("{}/resolve/{commit}/{name}", self.source.repo))?;
        self.retrying(resolve.as_str(), || async {
            let resp = match self.request(reqwest::Method::HEAD, &resolve).send().await {
                Ok(r) => r,
                Err(e) => return Ok(Attempt::Retry(e.to_string())),
            };
            let status = resp.status();
            let headers = resp.headers();
            let (size, etag) = size_and_etag(headers);
            let url = if status.is_redirection() {
                let location = header_str(headers, header::LOCATION.as_str()).ok_or_else(|| {
                    DownloadError::Protocol {
                        url: resolve.to_string(),
                        problem: format!("{status} without a Location"),
                    }
                })?;
                resolve
                    .join(location)
                    .map_err(|e| DownloadError::Protocol {
                        url: resolve.to_string(),
                        problem: format!("bad Location {location:?}: {e}"),
                    })?
            } else if status.is_success() {
                resolve.clone()
            } else {
                return self.status_error(status, &resolve, &format!("file {name}"));
            };
            let size = size.ok_or_else(|| DownloadError::Protocol {
                url: resolve.to_string(),
                problem: "no X-Linked-Size or Content-Length".into(),
            })?;
            Ok(Attempt::Done(RemoteFile {
                name: name.to_string(),
                size,
                expected: etag
                    .as_deref()
                    .map_or(Expected::SizeOnly, expected_from_etag),
                url: url.to_string(),
            }))
        })
        .await
    }

    /// Downloads everything the runtime needs into `dest`.
    pub async fn download(&self, dest: &Path) -> Result<Downloaded, DownloadError> {
        let started = Instant::now();
        let fetched_before = self.progress.fetched.get();
        let src = &self.source;
        let (commit, siblings) = self.revision_info().await?;
        let layout = |problem: String| DownloadError::Layout {
            repo: src.repo.clone(),
            revision: src.revision.clone(),
            problem,
        };
        let mut names = select_files(&siblings, src.gguf_file.as_deref()).map_err(layout)?;
        tokio::fs::create_dir_all(dest)
            .await
            .map_err(io_err(dest))?;
        let mut cached = 0;
        // The index names the shards: fetch it first (it is small), then list the shards.
        let indexed = names.iter().any(|n| n == SAFETENSORS_INDEX);
        if indexed {
            let index = self.remote_file(&commit, SAFETENSORS_INDEX).await?;
            self.progress.add_total(index.size);
            if self.fetch_file(&index, dest).await? {
                cached += index.size;
            }
            let bytes = tokio::fs::read(dest.join(SAFETENSORS_INDEX))
                .await
                .map_err(io_err(&dest.join(SAFETENSORS_INDEX)))?;
            let shards = shards_of_index(&bytes).map_err(layout)?;
            if let Some(missing) = shards.iter().find(|s| !siblings.contains(s)) {
                return Err(layout(format!(
                    "{SAFETENSORS_INDEX} names {missing}, which the repository does not have"
                )));
            }
            names.retain(|n| n != SAFETENSORS_INDEX);
            names.extend(shards);
        }
        let mut remote = Vec::new();
        for name in &names {
            remote.push(self.remote_file(&commit, name).await?);
        }
        let total: u64 = remote.iter().map(|f| f.size).sum();
        self.progress.add_total(total);
        tracing::info!(repo = %src.repo, revision = %src.revision, commit = %commit,
            files = remote.len(), bytes = self.progress.total(),
            dest = %dest.display(),
            "download: {} files, {} from {}", remote.len(),
            human_bytes(self.progress.total()), self.endpoint);
        let reporter = self.spawn_reporter(started);
        let result = async {
            for file in &remote {
                if self.fetch_file(file, dest).await? {
                    cached += file.size;
                }
            }
            Ok::<_, DownloadError>(())
        }
        .await;
        reporter.abort();
        result?;
        let _ = tokio::fs::remove_dir_all(dest.join(PARTIAL_DIR)).await;
        let fetched = self.progress.fetched.get() - fetched_before;
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(commit = %commit, fetched_bytes = fetched, cached_bytes = cached,
            seconds = secs,
            "download: complete, {} fetched in {secs:.1} s ({:.1} MB/s), {} already in place and verified",
            human_bytes(fetched), if secs > 0.0 { fetched as f64 / secs / 1e6 } else { 0.0 },
            human_bytes(cached));
        let mut files: Vec<String> = names;
        if indexed {
            files.insert(0, SAFETENSORS_INDEX.to_string());
        }
        Ok(Downloaded {
            commit,
            files,
            fetched_bytes: fetched,
            cached_bytes: cached,
        })
    }

    fn spawn_reporter(&self, started: Instant) -> tokio::task::JoinHandle<()> {
        let progress = self.progress.clone();
        let fetched_before = progress.fetched.get();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let line = progress_line(
                    progress.done(),
                    progress.total(),
                    progress.fetched.get() - fetched_before,
                    started.elapsed(),
                );
                tracing::info!("download: {line}");
            }
        })
    }

    /// Puts one verified file at `dest/name`. Returns whether it was already there.
    async fn fetch_file(&self, file: &RemoteFile, dest: &Path) -> Result<bool, DownloadError> {
        let target = dest.join(&file.name);
        if let Ok(meta) = tokio::fs::metadata(&target).await {
            if meta.len() == file.size {
                match verify_file(&target, file).await? {
                    None => {
                        self.progress.add_done(file.size);
                        tracing::info!(file = %file.name, "download: already in place, verified");
                        return Ok(true);
                    }
                    Some(problem) => tracing::warn!(file = %file.name, problem,
                        "download: the file in place is corrupt; downloading it again"),
                }
            } else {
                tracing::warn!(file = %file.name, have = meta.len(), want = file.size,
                    "download: the file in place has the wrong size; downloading it again");
            }
            tokio::fs::remove_file(&target)
                .await
                .map_err(io_err(&target))?;
        }
        let part = dest.join(PARTIAL_DIR).join(format!("{}.part", file.name));
        if let Some(parent) = part.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io_err(parent))?;
        }
        let url = Url::parse(&file.url).map_err(|e| DownloadError::Protocol {
            url: file.url.clone(),
            problem: e.to_string(),
        })?;
        // Bytes of the partial file counted in `progress.done`, so that a retry neither counts
        // them twice nor loses them; and how often the whole file failed verification.
        let counted = AtomicU64::new(0);
        let integrity_failures = AtomicU32::new(0);
        let attempts = self.retry.attempts;
        self.retrying(url.as_str(), || async {
            match self.fetch_once(file, &url, &part, &counted).await? {
                Attempt::Retry(p) => return Ok(Attempt::Retry(p)),
                Attempt::Done(()) => {}
            }
            if let Some(problem) = verify_file(&part, file).await? {
                let failures = integrity_failures.fetch_add(1, Ordering::Relaxed) + 1;
                self.progress.take_back(counted.swap(0, Ordering::Relaxed));
                tokio::fs::remove_file(&part).await.map_err(io_err(&part))?;
                tracing::warn!(file = %file.name, problem,
                    "download: verification failed; the file is downloaded again");
                if failures >= 2 {
                    return Err(DownloadError::Integrity {
                        file: file.name.clone(),
                        problem,
                        attempts: failures,
                    });
                }
                return Ok(Attempt::Retry(problem));
            }
            Ok(Attempt::Done(()))
        })
        .await
        .map_err(|e| match e {
            DownloadError::Transport { url, problem, .. } => DownloadError::Transport {
                url,
                problem,
                attempts,
            },
            other => other,
        })?;
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io_err(parent))?;
        }
        tokio::fs::rename(&part, &target)
            .await
            .map_err(io_err(&target))?;
        tracing::info!(file = %file.name, bytes = file.size, "download: file verified and in place");
        Ok(false)
    }

    /// One GET of `url` into `part`, resuming from its length. Progress counts every byte
    /// written; a restart from zero takes the partial bytes back.
    async fn fetch_once(
        &self,
        file: &RemoteFile,
        start_url: &Url,
        part: &Path,
        counted: &AtomicU64,
    ) -> Result<Attempt<()>, DownloadError> {
        let have = tokio::fs::metadata(part).await.map_or(0, |m| m.len());
        if have > file.size {
            tokio::fs::remove_file(part).await.map_err(io_err(part))?;
            return Ok(Attempt::Retry(
                "the partial file is longer than the file".into(),
            ));
        }
        if have == file.size {
            let already = counted.swap(have, Ordering::Relaxed);
            self.progress.add_done(have - already);
            return Ok(Attempt::Done(()));
        }
        let mut url = start_url.clone();
        let mut hops = 0;
        let resp = loop {
            let mut req = self.request(reqwest::Method::GET, &url);
            if have > 0 {
                req = req.header(header::RANGE, format!("bytes={have}-"));
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => return Ok(Attempt::Retry(e.to_string())),
            };
            if resp.status().is_redirection() {
                hops += 1;
                let location = header_str(resp.headers(), header::LOCATION.as_str())
                    .ok_or_else(|| DownloadError::Protocol {
                        url: url.to_string(),
                        problem: "redirect without a Location".into(),
                    })?
                    .to_string();
                if hops > 5 {
                    return Err(DownloadError::Protocol {
                        url: url.to_string(),
                        problem: "more than 5 redirects".into(),
                    });
                }
                url = url.join(&location).map_err(|e| DownloadError::Protocol {
                    url: url.to_string(),
                    problem: format!("bad Location {location:?}: {e}"),
                })?;
                continue;
            }
            break resp;
        };
        let status = resp.status();
        let mut offset = match status {
            StatusCode::PARTIAL_CONTENT if have > 0 => {
                let start = header_str(resp.headers(), header::CONTENT_RANGE.as_str())
                    .and_then(|r| r.strip_prefix("bytes "))
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.parse::<u64>().ok());
                if start != Some(have) {
                    return Err(DownloadError::Protocol {
                        url: url.to_string(),
                        problem: format!("asked for bytes {have}- and got Content-Range {start:?}"),
                    });
                }
                tracing::info!(file = %file.name, from = have, "download: resuming");
                have
            }
            StatusCode::OK => {
                if have > 0 {
                    tracing::info!(file = %file.name, "download: the server ignored Range; starting the file again");
                }
                0
            }
            s => return self.status_error(s, &url, &format!("file {}", file.name)),
        };
        // Bytes of the partial file from an earlier attempt (or an earlier run of the
        // container) are counted as done once; a restart from zero takes them back.
        let already = counted.swap(offset, Ordering::Relaxed);
        if offset >= already {
            self.progress.add_done(offset - already);
        } else {
            self.progress.take_back(already - offset);
        }
        let mut out = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(offset == 0)
            .append(offset > 0)
            .open(part)
            .await
            .map_err(io_err(part))?;
        let mut body = resp.bytes_stream();
        let outcome = loop {
            match body.next().await {
                None => break Attempt::Done(()),
                Some(Ok(chunk)) => {
                    let room = file.size - offset;
                    if chunk.len() as u64 > room {
                        break Attempt::Retry(format!(
                            "the server sent more than the {} bytes of the file",
                            file.size
                        ));
                    }
                    out.write_all(&chunk).await.map_err(io_err(part))?;
                    offset += chunk.len() as u64;
                    self.progress.add(chunk.len() as u64);
                    counted.store(offset, Ordering::Relaxed);
                }
                Some(Err(e)) => {
                    break Attempt::Retry(format!("connection cut after {offset} bytes: {e}"));
                }
            }
        };
        out.flush().await.map_err(io_err(part))?;
        drop(out);
        if let Attempt::Done(()) = outcome
            && offset < file.size
        {
            return Ok(Attempt::Retry(format!(
                "the body ended after {offset} of {} bytes",
                file.size
            )));
        }
        Ok(outcome)
    }
}

/// Where partial files wait until they are verified.
pub const PARTIAL_DIR: &str = ".partial";

/// Checks `path` against `file`'s size and hash; `None` when it matches.
pub async fn verify_file(path: &Path, file: &RemoteFile) -> Result<Option<String>, DownloadError> {
    let mut f = tokio::fs::File::open(path).await.map_err(io_err(path))?;
    let len = f.metadata().await.map_err(io_err(path))?.len();
    if len != file.size {
        return Ok(Some(format!(
            "size {len} bytes, the hub says {}",
            file.size
        )));
    }
    let mut sha256 = sha2::Sha256::new();
    let mut sha1 = sha1::Sha1::new();
    if matches!(file.expected, Expected::GitSha1(_)) {
        sha1.update(format!("blob {len}\0").as_bytes());
    }
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).await.map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        match file.expected {
            Expected::Sha256(_) => sha256.update(&buf[..n]),
            Expected::GitSha1(_) => sha1.update(&buf[..n]),
            Expected::SizeOnly => {}
        }
    }
    let (kind, want, got) = match &file.expected {
        Expected::Sha256(want) => ("sha256", want, hex(&sha256.finalize())),
        Expected::GitSha1(want) => ("git blob sha1", want, hex(&sha1.finalize())),
        Expected::SizeOnly => return Ok(None),
    };
    Ok((&got != want).then(|| format!("{kind} {got}, the hub says {want}")))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_sharded_repository_gives_config_tokenizer_and_the_index() {
        let siblings = names(&[
            ".gitattributes",
            "README.md",
            "config.json",
            "generation_config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "consolidated.safetensors",
            "original/consolidated.00.pth",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ]);
        assert_eq!(
            select_files(&siblings, None).expect("selects"),
            names(&[
                "config.json",
                "tokenizer.json",
                "tokenizer_config.json",
                "generation_config.json",
                "model.safetensors.index.json"
            ])
        );
    }

    #[test]
    fn single_file_and_unindexed_weights() {
        let one = names(&[
            "config.json",
            "tokenizer.json",
            "model.safetensors",
            "x.safetensors",
        ]);
        assert_eq!(
            select_files(&one, None).expect("selects"),
            names(&["config.json", "tokenizer.json", "model.safetensors"])
        );
        let loose = names(&[
            "config.json",
            "tokenizer.json",
            "a.safetensors",
            "sub/b.safetensors",
        ]);
        assert_eq!(
            select_files(&loose, None).expect("selects"),
            names(&["config.json", "tokenizer.json", "a.safetensors"])
        );
        let none = names(&["config.json", "tokenizer.json", "pytorch_model.bin"]);
        assert!(
            select_files(&none, None)
                .expect_err("no weights")
                .contains("safetensors")
        );
        let no_tok = names(&["config.json", "model.safetensors"]);
        assert_eq!(
            select_files(&no_tok, None).expect_err("no tokenizer"),
            "has no tokenizer.json"
        );
    }

    #[test]
    fn gguf_takes_exactly_the_named_file() {
        let siblings = names(&["a.Q4_1.gguf", "a.Q8_0.gguf", "config.json"]);
        assert_eq!(
            select_files(&siblings, Some("a.Q4_1.gguf")).expect("selects"),
            names(&["a.Q4_1.gguf"])
        );
        let err = select_files(&siblings, Some("b.gguf")).expect_err("missing");
        assert_eq!(
            err,
            "has no file b.gguf (GGUF files there: a.Q4_1.gguf, a.Q8_0.gguf)"
        );
    }

    #[test]
    fn the_index_names_the_shards_once_and_safely() {
        let index = br#"{"metadata": {"total_size": 10}, "weight_map": {
            "a": "model-00002-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
            "c": "model-00001-of-00002.safetensors"}}"#;
        assert_eq!(
            shards_of_index(index).expect("parses"),
            names(&[
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ])
        );
        assert!(shards_of_index(br#"{"weight_map": {"a": "../etc/passwd.safetensors"}}"#).is_err());
        assert!(shards_of_index(br#"{"weight_map": {}}"#).is_err());
        assert!(shards_of_index(b"not json").is_err());
    }

    #[test]
    fn etags_name_the_hash() {
        let sha = "b".repeat(64);
        assert_eq!(
            expected_from_etag(&format!("\"{sha}\"")),
            Expected::Sha256(sha.clone())
        );
        assert_eq!(
            expected_from_etag(&format!("W/\"{}\"", "A".repeat(40))),
            Expected::GitSha1("a".repeat(40))
        );
        assert_eq!(expected_from_etag("\"abc-123\""), Expected::SizeOnly);
    }

    #[test]
    fn lfs_redirect_headers_win_over_the_redirect_itself() {
        let mut h = HeaderMap::new();
        h.insert("content-length", "0".parse().expect("value"));
        h.insert(
            "etag",
            "\"1111111111111111111111111111111111111111\""
                .parse()
                .expect("value"),
        );
        h.insert("x-linked-size", "98362432".parse().expect("value"));
        h.insert(
            "x-linked-etag",
            format!("\"{}\"", "c".repeat(64)).parse().expect("value"),
        );
        assert_eq!(
            size_and_etag(&h),
            (Some(98_362_432), Some(format!("\"{}\"", "c".repeat(64))))
        );
    }

    #[test]
    fn progress_lines_read_like_a_person_would_write_them() {
        assert_eq!(
            progress_line(512 << 20, 1 << 30, 512 << 20, Duration::from_secs(10)),
            "50.0% 512.00 MiB of 1.00 GiB, 53.7 MB/s, about 10 s left"
        );
        assert_eq!(
            progress_line(0, 100, 0, Duration::ZERO),
            "0.0% 0 B of 100 B, 0.0 MB/s, time left unknown"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(500));
        assert_eq!(p.backoff(3), Duration::from_secs(2));
        assert_eq!(p.backoff(10), Duration::from_secs(20));
    }

    #[test]
    fn reasons_are_what_the_controller_matches() {
        let e = DownloadError::Unauthorized {
            repo: "a/b".into(),
            status: 401,
            token_set: false,
        };
        assert_eq!(e.reason(), "ModelDownloadUnauthorized");
        assert!(e.to_string().contains("HF_TOKEN is not set"), "{e}");
    }
}
