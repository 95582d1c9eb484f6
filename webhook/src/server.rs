//! The HTTP side: the admission router (`/mutate`, `/validate`) served over rustls, and the
//! plain-HTTP health/metrics router (`/healthz`, `/readyz`, `/metrics`) on its own port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use kaito_api::admission::AdmissionConfig;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::certs::ReloadingResolver;
use crate::metrics::Metrics;
use crate::review::{self, Endpoint, Outcome};
use crate::tuning_config::{self, ConfigLookup};

/// Default largest accepted AdmissionReview body (the apiserver's own limit for objects is
/// about 3 MiB; a review carries the object and the old object).
pub const DEFAULT_MAX_BODY: usize = 3 * 1024 * 1024;

/// How much the admission server takes on at once, and for how long. Together with the body
/// limit and [`crate::review::MAX_JSON_VALUES`] they bound its memory: at most
/// `max_admissions` bodies are read and parsed at a time (others wait for a slot, up to
/// `request_timeout`), and at most `max_connections` connections are open, each buffering at
/// most [`CONNECTION_WINDOW`] of a body nobody reads yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Admission requests read and handled at the same time; more wait for a slot.
    pub max_admissions: usize,
    /// Open HTTPS connections; more wait in the listen backlog.
    pub max_connections: usize,
    /// Longest time from a request's headers to its answer, waiting for a slot included; then
    /// it is answered 503 (the API server's own timeout is 10 s by default).
    pub request_timeout: Duration,
    /// Longest time for a client to complete the TLS handshake, send its first bytes, or (HTTP/1)
    /// the headers of a request; then the connection is closed.
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_admissions: 4,
            max_connections: 128,
            request_timeout: Duration::from_secs(9),
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// The HTTP/2 flow-control windows (per stream and per connection): what a connection may
/// have sent of bodies the server has not read yet.
pub const CONNECTION_WINDOW: u32 = 64 * 1024;
/// HTTP/1 read buffer, and the HTTP/2 header list limit: the headers of one request.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Shared state of the routers.
#[derive(Clone)]
pub struct AppState {
    /// Cloud, provisioner and catalogs.
    pub config: Arc<AdmissionConfig>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// The serving certificate (readiness: loaded or not).
    pub resolver: Arc<ReloadingResolver>,
    /// Largest accepted body, in bytes.
    pub max_body: usize,
    /// Reads the ConfigMaps tuning workspaces name (`tuning.config`); `None`: not checked, the
    /// workspace is admitted with a warning.
    pub client: Option<kube::Client>,
    /// Slots for admissions handled at once (`Limits::max_admissions`).
    pub admissions: Arc<Semaphore>,
    /// How many slots `admissions` was made with.
    pub max_admissions: usize,
    /// `Limits::request_timeout`.
    pub request_timeout: Duration,
    /// Resolves Hugging Face ids (`inference.preset.name: org/model`); `None`: such workspaces
    /// are denied.
    pub hub: Option<Arc<crate::hub::HubResolver>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .field("metrics", &self.metrics)
            .field("resolver", &self.resolver)
            .field("max_body", &self.max_body)
            .field("client", &self.client.as_ref().map(|_| "kube::Client"))
            .field("admissions", &self.admissions.available_permits())
            .field("request_timeout", &self.request_timeout)
            .field("hub", &self.hub)
            .finish()
    }
}

impl AppState {
    /// State with the default body limit and [`Limits`], a fresh metrics registry and an
    /// empty resolver.
    pub fn new(config: AdmissionConfig) -> Self {
        Self {
            config: Arc::new(config),
            metrics: Arc::new(Metrics::new()),
            resolver: Arc::new(ReloadingResolver::new()),
            max_body: DEFAULT_MAX_BODY,
            client: None,
            admissions: Arc::new(Semaphore::new(Limits::default().max_admissions)),
            max_admissions: Limits::default().max_admissions,
            request_timeout: Limits::default().request_timeout,
            hub: None,
        }
    }

    /// The same state under `limits`.
    pub fn with_limits(mut self, limits: &Limits) -> Self {
        self.max_admissions = limits.max_admissions.max(1);
        self.admissions = Arc::new(Semaphore::new(self.max_admissions));
        self.request_timeout = limits.request_timeout;
        self
    }
}

/// `POST /mutate` and `POST /validate`.
pub fn admission_router(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        // The handlers enforce `max_body` themselves, to answer with an AdmissionReview.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// `GET /healthz`, `GET /readyz`, `GET /metrics`.
pub fn health_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn mutate(State(state): State<AppState>, req: Request) -> Response {
    admit(Endpoint::Mutate, &state, req).await
}

async fn validate(State(state): State<AppState>, req: Request) -> Response {
    admit(Endpoint::Validate, &state, req).await
}

async fn admit(endpoint: Endpoint, state: &AppState, req: Request) -> Response {
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started) + state.request_timeout;
    let secs = state.request_timeout.as_secs_f32();
    // The slot is taken before the body is read: reading and parsing are what cost memory.
    // Waiting for one briefly beats refusing: a refusal fails the write (failurePolicy Fail).
    let outcome = match tokio::time::timeout_at(deadline, state.admissions.acquire()).await {
        Ok(Ok(_permit)) => {
            match tokio::time::timeout_at(deadline, admit_now(endpoint, state, req)).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    tracing::warn!(endpoint = endpoint.as_str(), "admission timed out");
                    review::unavailable(format!(
                        "kaito-webhook did not answer within {secs} s: the request body arrived too \
                     slowly, or reading the ConfigMap or the Hugging Face hub took too long; the API server may retry"
                    ))
                }
            }
        }
        Ok(Err(_)) | Err(_) => {
            tracing::warn!(
                endpoint = endpoint.as_str(),
                "no admission slot free within the request timeout"
            );
            review::unavailable(format!(
                "kaito-webhook is busy: all {} admission slots stayed taken for {secs} s; the API \
                 server may retry (more replicas or --max-concurrent-admissions add capacity)",
                state.max_admissions
            ))
        }
    };
    respond(endpoint, state, started, outcome)
}

async fn admit_now(endpoint: Endpoint, state: &AppState, req: Request) -> Outcome {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body as u64) {
        return too_large(state.max_body);
    }
    let body = match axum::body::to_bytes(req.into_body(), state.max_body).await {
        Ok(body) => body,
        Err(err) if is_length_limit(&err) => return too_large(state.max_body),
        Err(err) => return review::bad_request(format!("cannot read the request body: {err}")),
    };
    let call = match review::Call::parse(&body) {
        Ok(call) => call,
        Err(outcome) => return outcome,
    };
    let config = async {
        match endpoint {
            Endpoint::Validate => tuning_config::lookup(state.client.as_ref(), &call).await,
            Endpoint::Mutate => ConfigLookup::NotNeeded,
        }
    };
    let hub = crate::hub::lookup(
        state.hub.as_deref(),
        state.client.as_ref(),
        &call,
        endpoint == Endpoint::Validate,
    );
    let (config, hub) = tokio::join!(config, hub);
    review::handle_call(endpoint, &call, &state.config, &config, &hub)
}

fn respond(endpoint: Endpoint, state: &AppState, started: Instant, outcome: Outcome) -> Response {
    state.metrics.observe(endpoint, &outcome, started.elapsed());
    let status = StatusCode::from_u16(outcome.http_status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = Response::new(Body::from(outcome.body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn is_length_limit(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

fn too_large(max: usize) -> Outcome {
    review::bad_request(format!(
        "the AdmissionReview is larger than the webhook's limit of {max} bytes"
    ))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.resolver.is_loaded() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no serving certificate loaded yet",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics").into_response(),
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` turns true; then stops accepting, lets
/// open requests finish (at most `grace`), and returns. At most `limits.max_connections`
/// connections are open at once (more wait in the listen backlog); a client that does not
/// finish its TLS handshake, send its first bytes, or (HTTP/1) a request's headers within
/// `limits.header_timeout` is disconnected.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    limits: Limits,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(CONNECTION_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(u32::try_from(limits.max_admissions.max(1) * 4).unwrap_or(64))
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(limits.header_timeout);
    loop {
        let slot = tokio::select! {
            slot = connections.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            // The handshake and the first bytes of the first request, within the header
            // timeout: a connection that says nothing does not keep a slot.
            let opened = tokio::time::timeout(header_timeout, async {
                let tls = acceptor.accept(tcp).await?;
                let mut io = tokio::io::BufReader::new(tls);
                io.fill_buf().await?;
                Ok::<_, std::io::Error>(io)
            })
            .await;
            let io = match opened {
                Ok(Ok(io)) => io,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "TLS handshake or first read failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "no TLS handshake or request within the header timeout");
                    return;
                }
            };
            let conn = builder.serve_connection(TokioIo::new(io), service);
            if let Err(err) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("admission server: no longer accepting; draining open connections");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?grace, "open connections did not finish in time");
    }
}

/// Serves the plain-HTTP health router until `shutdown` turns true.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await
}
