//! Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `kube`, `build`, `provision`, `serde`.
    pub category: String,
}

/// Label of the write counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// What was written: `Workspace` (its finalizer), `WorkspaceStatus`, `Service`,
    /// `StatefulSet`, `ConfigMap`, `Job`, `Event`.
    pub kind: String,
}

/// The controller's metrics.
pub struct Metrics {
    /// Reconciles run.
    pub reconciles: Counter,
    /// Failed reconciles by category.
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconcile duration.
    pub duration: Histogram,
    /// Seconds from workspace creation until ResourceReady first turned True.
    pub provisioning: Histogram,
    /// Writes to the API server by what was written (the reconciler's; the provisioners'
    /// NodeClaims and cloud calls are not counted).
    pub writes: Family<WriteLabels, Counter>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kaito_controller");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let provisioning = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register("reconciles", "Workspace reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed workspace reconciles by category",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            duration.clone(),
        );
        registry.register(
            "provisioning_seconds",
            "Seconds from workspace creation until its GPU nodes were ready",
            provisioning.clone(),
        );
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "api_writes",
            "Writes of the reconciler to the API server by kind",
            writes.clone(),
        );
        Self {
            reconciles,
            errors,
            duration,
            provisioning,
            writes,
            registry,
        }
    }

    /// Text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if prometheus_client::encoding::text::encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }
}

/// State of the HTTP endpoints.
#[derive(Clone)]
pub struct Health {
    /// Metrics to expose.
    pub metrics: Arc<Metrics>,
    /// Set once this replica leads and its watches run.
    pub ready: Arc<AtomicBool>,
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.encode(),
    )
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    if h.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not leading yet")
    }
}

/// The router: `/metrics`, `/healthz`, `/readyz`.
pub fn router(h: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_by_name() {
        let m = Metrics::new();
        m.reconciles.inc();
        m.errors
            .get_or_create(&ErrorLabels {
                category: "kube".into(),
            })
            .inc();
        let text = m.encode();
        assert!(
            text.contains("kaito_controller_reconciles_total 1"),
            "{text}"
        );
        assert!(
            text.contains("kaito_controller_reconcile_errors_total{category=\"kube\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("kaito_controller_provisioning_seconds_bucket"),
            "{text}"
        );
    }
}
