//! Flags of `kaito-runtime` and the serve loop: bind, load in the background, drain on SIGTERM.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Notify;

use crate::adapters;
use crate::conn::{ConnLimits, serve};
use crate::download::{Downloader, HubSource, RetryPolicy};
use crate::engine::{DType, Engine, EngineConfig, LoadError};
use crate::server::{AppState, Limits, LoadState, router};

/// Flags (and environment variables) of the server.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// Model directory: Hugging Face layout (config.json, tokenizer.json, *.safetensors) or
    /// one GGUF file. With --model-repo, the weights are downloaded into it first (files
    /// already there are verified, not trusted).
    #[arg(long, env = "MODEL_DIR", default_value = "/workspace/weights")]
    pub model_dir: PathBuf,
    /// Hugging Face repository (`org/name`) to download the weights from before loading.
    #[arg(long, env = "MODEL_REPO")]
    pub model_repo: Option<String>,
    /// Revision of --model-repo: a commit pins the weights.
    #[arg(long, env = "MODEL_REVISION", default_value = "main")]
    pub model_revision: String,
    /// The GGUF file to serve (and, with --model-repo, the only file downloaded).
    #[arg(long, env = "MODEL_FILE")]
    pub model_file: Option<String>,
    /// The hub's base URL (a mirror or a proxy of the Hugging Face hub).
    #[arg(long, env = "HF_ENDPOINT", default_value = "https://huggingface.co")]
    pub hf_endpoint: String,
    /// Hugging Face access token for gated or private repositories.
    #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
    pub hf_token: Option<String>,
    /// Context limit in tokens (prompt plus new tokens); below the model's own context, it
    /// is what the GPU's KV cache was sized for.
    #[arg(long, env = "MAX_MODEL_LEN")]
    pub max_model_len: Option<usize>,
    /// Where a failure to download or load is written for Kubernetes (`Reason: message`),
    /// when that file exists.
    #[arg(long, env = "TERMINATION_LOG", default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
    /// Name the model is served under (the preset name).
    #[arg(long, env = "SERVED_MODEL_NAME", default_value = "model")]
    pub served_model_name: String,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: std::net::IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 5000)]
    pub port: u16,
    /// Weight data type.
    #[arg(long, env = "DTYPE", value_enum, default_value = "auto")]
    pub dtype: DType,
    /// In-situ quantization applied at load time, e.g. Q4K, Q8_0 (recommended on CPU: Q4K).
    #[arg(long, env = "ISQ")]
    pub isq: Option<String>,
    /// Sequences generated at once.
    #[arg(long, env = "MAX_RUNNING", default_value_t = 16)]
    pub max_running: usize,
    /// Requests allowed to wait for a slot; beyond that the answer is HTTP 429.
    #[arg(long, env = "MAX_QUEUED", default_value_t = 64)]
    pub max_queued: usize,
    /// Seconds a request may wait for a slot (fractions allowed); then the answer is HTTP 503
    /// with Retry-After.
    #[arg(long, env = "QUEUE_TIMEOUT_SECONDS", default_value = "30", value_parser = seconds)]
    pub queue_timeout_seconds: Duration,
    /// Most new tokens one request may generate: an explicit max_tokens / max_new_tokens above
    /// it is HTTP 400, a default is capped to it. Unset: only the context limit bounds it.
    #[arg(long, env = "MAX_TOKENS")]
    pub max_tokens: Option<usize>,
    /// Largest request body in bytes; beyond that the answer is HTTP 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Largest request line plus headers in bytes (at most 100 header fields); beyond that the
    /// answer is HTTP 431 and the connection is closed.
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,
    /// Seconds a client has to send a request's headers, and that an idle kept-alive
    /// connection stays open (fractions allowed); then the connection is closed.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECONDS", default_value = "30", value_parser = seconds)]
    pub header_read_timeout_seconds: Duration,
    /// Seconds a response write may make no progress because the client stopped reading
    /// (fractions allowed); then the connection is closed and its generation stopped, freeing
    /// its slot.
    #[arg(long, env = "WRITE_TIMEOUT_SECONDS", default_value = "30", value_parser = seconds)]
    pub write_timeout_seconds: Duration,
    /// Kernel send buffer of each connection, in bytes (SO_SNDBUF; the kernel doubles it).
    /// Unset: the kernel's autotuning, which on a fast link lets a client that stopped reading
    /// soak up megabytes before the write timeout starts to count.
    #[arg(long, env = "SEND_BUFFER_BYTES")]
    pub send_buffer_bytes: Option<u32>,
    /// Directory whose subdirectories are PEFT adapters; the strength of each comes from the
    /// environment variable named after it.
    #[arg(long, env = "ADAPTERS_DIR", default_value = "/mnt/adapter")]
    pub adapters_dir: PathBuf,
    /// Run on the CPU even when a GPU is available.
    #[arg(long, env = "FORCE_CPU")]
    pub cpu: bool,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A flag has an invalid value.
    #[error("invalid flag: {0}")]
    Flag(String),
    /// Binding the port failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Loading the model failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Adapters could not be discovered.
    #[error(transparent)]
    Adapter(#[from] adapters::AdapterError),
    /// Serving failed.
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Smallest `--max-header-bytes`: room for a request line and ordinary headers.
const MIN_HEADER_BYTES: usize = 1024;

/// Parses a positive number of seconds, fractions allowed (`30`, `0.5`).
fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds, e.g. 30 or 0.5"))?;
    if value.is_nan() || value <= 0.0 {
        return Err(format!("{value} s: the timeout must be positive"));
    }
    Duration::try_from_secs_f64(value).map_err(|e| format!("{value} s: {e}"))
}

/// Binds the listening socket; `send_buffer` (SO_SNDBUF) is inherited by every accepted
/// connection.
fn bind(addr: SocketAddr, send_buffer: Option<u32>) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    if let Some(bytes) = send_buffer {
        socket.set_send_buffer_size(bytes)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

impl ServeArgs {
    /// The HTTP limits these flags describe, checked.
    pub fn limits(&self) -> Result<(Limits, ConnLimits), RunError> {
        if self.max_tokens == Some(0) {
            return Err(RunError::Flag(
                "--max-tokens / MAX_TOKENS must be positive (leave it unset for no cap)".into(),
            ));
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(RunError::Flag(format!(
                "--max-header-bytes / MAX_HEADER_BYTES is {}; it must be at least \
                 {MIN_HEADER_BYTES}",
                self.max_header_bytes
            )));
        }
        let limits = Limits {
            max_running: self.max_running.max(1),
            max_queued: self.max_queued,
            max_body_bytes: self.max_body_bytes,
            queue_timeout: self.queue_timeout_seconds,
            max_tokens: self.max_tokens,
        };
        let conn = ConnLimits {
            header_read_timeout: self.header_read_timeout_seconds,
            write_timeout: self.write_timeout_seconds,
            max_header_bytes: self.max_header_bytes,
        };
        Ok((limits, conn))
    }

    /// The engine configuration these flags describe, with adapters read from the environment.
    pub fn engine_config(&self) -> Result<EngineConfig, RunError> {
        let isq = self
            .isq
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| mistralrs::parse_isq_value(s, None).map_err(RunError::Flag))
            .transpose()?;
        let adapters = adapters::discover(&self.adapters_dir, |name| std::env::var(name).ok())?;
        if self.max_model_len == Some(0) {
            return Err(RunError::Flag(
                "--max-model-len / MAX_MODEL_LEN must be positive".into(),
            ));
        }
        Ok(EngineConfig {
            model_dir: self.model_dir.clone(),
            gguf_file: self.model_file.clone().filter(|f| !f.is_empty()),
            max_model_len: self.max_model_len,
            dtype: self.dtype,
            isq,
            max_running: self.max_running,
            force_cpu: self.cpu,
            adapters,
            adapter_cache_dir: None,
        })
    }

    /// The hub source of the weights, when they are to be downloaded.
    pub fn hub_source(&self) -> Option<HubSource> {
        let repo = self.model_repo.clone().filter(|r| !r.is_empty())?;
        Some(HubSource {
            endpoint: self.hf_endpoint.clone(),
            repo,
            revision: self.model_revision.clone(),
            token: self.hf_token.clone().filter(|t| !t.is_empty()),
            gguf_file: self.model_file.clone().filter(|f| !f.is_empty()),
        })
    }
}

/// Writes `Reason: message` where Kubernetes reads a container's termination message, if that
/// file exists (the kubelet creates it; outside a pod nothing is written).
fn write_termination_log(path: &std::path::Path, e: &LoadError) {
    if path.is_file() {
        let text = format!("{}: {e}", e.reason());
        if let Err(err) = std::fs::write(path, text) {
            tracing::warn!(path = %path.display(), error = %err, "cannot write the termination log");
        }
    }
}

/// Downloads the weights (when a hub source is given), then loads the model.
async fn prepare(
    state: &crate::server::SharedState,
    source: Option<HubSource>,
    engine_config: &EngineConfig,
) -> Result<Engine, LoadError> {
    if let Some(source) = source {
        state.set_load_state(LoadState::Downloading);
        let progress = state.metrics().download.clone();
        let downloader = Downloader::new(source, RetryPolicy::default(), progress)?;
        downloader.download(&engine_config.model_dir).await?;
        state.set_load_state(LoadState::Loading);
    }
    Engine::load(engine_config).await
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn termination_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Serves until `shutdown` resolves (then drains for at most the grace period) or loading fails.
/// The bound address is printed to stdout as `kaito-runtime listening on ADDR`.
pub async fn run(
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let engine_config = args.engine_config()?;
    let (limits, conn_limits) = args.limits()?;
    let source = args.hub_source();
    let addr = SocketAddr::new(args.host, args.port);
    let listener =
        bind(addr, args.send_buffer_bytes).map_err(|source| RunError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(RunError::Serve)?;
    let state = AppState::new(args.served_model_name.clone(), limits);
    println!("kaito-runtime listening on {local}");
    tracing::info!(addr = %local, model_dir = %args.model_dir.display(),
        served_model_name = %args.served_model_name, adapters = engine_config.adapters.len(),
        model_repo = args.model_repo.as_deref().unwrap_or("-"),
        "listening; loading the model in the background");

    let load_failed = Arc::new(Notify::new());
    let load_error = Arc::new(std::sync::Mutex::new(None::<LoadError>));
    {
        let state = state.clone();
        let load_failed = load_failed.clone();
        let load_error = load_error.clone();
        let termination_log = args.termination_log.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            match prepare(&state, source, &engine_config).await {
                Ok(engine) => {
                    let secs = started.elapsed().as_secs_f64();
                    state.metrics().model_load_seconds.set(secs);
                    state.set_load_state(LoadState::Ready(Arc::new(engine)));
                    tracing::info!(seconds = secs, "model loaded; ready");
                }
                Err(e) => {
                    tracing::error!(error = %e, reason = e.reason(), "model failed to load");
                    write_termination_log(&termination_log, &e);
                    state.set_load_state(LoadState::Failed(e.to_string()));
                    *load_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    load_failed.notify_one();
                }
            }
        });
    }

    let drain_started = Arc::new(Notify::new());
    let stop = {
        let state = state.clone();
        let drain_started = drain_started.clone();
        let load_failed = load_failed.clone();
        async move {
            tokio::select! {
                () = shutdown => tracing::info!("shutdown requested; draining in-flight requests"),
                () = load_failed.notified() => {},
            }
            state.begin_shutdown();
            drain_started.notify_one();
        }
    };
    let timed_out = state.metrics().timed_out.clone();
    let server = serve(
        listener,
        router(state.clone()),
        conn_limits,
        timed_out,
        stop,
    );
    let grace = Duration::from_secs(args.shutdown_grace_seconds);
    tokio::select! {
        () = server => {},
        () = async {
            drain_started.notified().await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!(seconds = grace.as_secs(), "grace period over; exiting with requests in flight"),
    }
    if let Some(e) = load_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e.into());
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_take_positive_seconds_with_fractions() {
        assert_eq!(seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "NaN", "inf", "soon"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_refuse_a_zero_token_cap_and_tiny_header_limits() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let parse = |extra: &[&str]| {
            let args = ["kaito-runtime"].iter().chain(extra);
            <Cli as clap::Parser>::try_parse_from(args).map(|c| c.serve)
        };
        let args = parse(&[]).expect("defaults parse");
        let (limits, conn) = args.limits().expect("defaults are valid");
        assert_eq!(limits.queue_timeout, Duration::from_secs(30));
        assert_eq!(limits.max_tokens, None);
        assert_eq!(conn.write_timeout, Duration::from_secs(30));
        assert_eq!(conn.max_header_bytes, 32 * 1024);
        let err = parse(&["--max-tokens", "0"])
            .expect("parses")
            .limits()
            .expect_err("zero cap");
        assert!(err.to_string().contains("--max-tokens"), "{err}");
        let err = parse(&["--max-header-bytes", "100"])
            .expect("parses")
            .limits()
            .expect_err("tiny");
        assert!(err.to_string().contains("--max-header-bytes"), "{err}");
        assert!(parse(&["--write-timeout-seconds", "0"]).is_err());
    }
}
