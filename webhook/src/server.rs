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
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use kaito_api::admission::AdmissionConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::certs::ReloadingResolver;
use crate::metrics::Metrics;
use crate::review::{self, Endpoint, Outcome};
use crate::tuning_config::{self, ConfigLookup};

/// Default largest accepted AdmissionReview body (the apiserver's own limit for objects is
/// about 3 MiB; a review carries the object and the old object).
pub const DEFAULT_MAX_BODY: usize = 3 * 1024 * 1024;

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
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .field("metrics", &self.metrics)
            .field("resolver", &self.resolver)
            .field("max_body", &self.max_body)
            .field("client", &self.client.as_ref().map(|_| "kube::Client"))
            .finish()
    }
}

impl AppState {
    /// State with the default body limit, a fresh metrics registry and an empty resolver.
    pub fn new(config: AdmissionConfig) -> Self {
        Self {
            config: Arc::new(config),
            metrics: Arc::new(Metrics::new()),
            resolver: Arc::new(ReloadingResolver::new()),
            max_body: DEFAULT_MAX_BODY,
            client: None,
        }
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
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let outcome = if declared.is_some_and(|n| n > state.max_body as u64) {
        too_large(state.max_body)
    } else {
        match axum::body::to_bytes(req.into_body(), state.max_body).await {
            Ok(body) => {
                let config = match endpoint {
                    Endpoint::Validate => tuning_config::lookup(state.client.as_ref(), &body).await,
                    Endpoint::Mutate => ConfigLookup::NotNeeded,
                };
                review::handle_with(endpoint, &body, &state.config, &config)
            }
            Err(err) => {
                if is_length_limit(&err) {
                    too_large(state.max_body)
                } else {
                    review::bad_request(format!("cannot read the request body: {err}"))
                }
            }
        }
    };
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
/// open requests finish (at most `grace`), and returns.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let builder = Builder::new(TokioExecutor::new());
    loop {
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
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let conn = builder.serve_connection(TokioIo::new(tls), service);
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
