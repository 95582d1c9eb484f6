//! Flags of `kaito-runtime` and the serve loop: bind, load in the background, drain on SIGTERM.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::adapters;
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
    /// Largest request body in bytes; beyond that the answer is HTTP 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
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

impl ServeArgs {
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
    let source = args.hub_source();
    let addr = SocketAddr::new(args.host, args.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(RunError::Serve)?;
    let state = AppState::new(
        args.served_model_name.clone(),
        Limits {
            max_running: args.max_running.max(1),
            max_queued: args.max_queued,
            max_body_bytes: args.max_body_bytes,
        },
    );
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
    let server = axum::serve(listener, router(state.clone())).with_graceful_shutdown(stop);
    let grace = Duration::from_secs(args.shutdown_grace_seconds);
    tokio::select! {
        result = server => result.map_err(RunError::Serve)?,
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
