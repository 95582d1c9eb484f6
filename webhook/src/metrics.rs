//! Prometheus metrics: admissions by endpoint, operation, kind and verdict, and a latency
//! histogram per endpoint; served as text on the plain-HTTP health port.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::review::{Endpoint, Outcome};

/// Labels of `kaito_webhook_admissions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// `mutate` or `validate`.
    pub endpoint: &'static str,
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT`, or `unknown`.
    pub operation: &'static str,
    /// `Workspace`, `other`, or `unknown`.
    pub kind: &'static str,
    /// `allowed`, `patched`, `denied`, or `bad_request`.
    pub verdict: &'static str,
}

/// Labels of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// `mutate` or `validate`.
    pub endpoint: &'static str,
}

/// The webhook's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    admissions: Family<AdmissionLabels, Counter>,
    latency: Family<EndpointLabels, Histogram>,
    cert_reloads: Counter,
    cert_not_after: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kaito_webhook");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "Admission reviews answered, by endpoint, operation, kind and verdict",
            admissions.clone(),
        );
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            // 50 µs .. ~1.6 s
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.000_05, 2.0, 16,
            ))
        });
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission review, from body read to response serialized",
            latency.clone(),
        );
        let cert_reloads = Counter::default();
        registry.register(
            "certificate_reloads",
            "Serving certificates loaded (initial load, file change or rotation)",
            cert_reloads.clone(),
        );
        let cert_not_after = Gauge::default();
        registry.register(
            "certificate_not_after_seconds",
            "Expiry of the serving certificate in use, as a Unix timestamp",
            cert_not_after.clone(),
        );
        Self {
            registry,
            admissions,
            latency,
            cert_reloads,
            cert_not_after,
        }
    }

    /// Records one answered admission.
    pub fn observe(&self, endpoint: Endpoint, outcome: &Outcome, elapsed: Duration) {
        self.admissions
            .get_or_create(&AdmissionLabels {
                endpoint: endpoint.as_str(),
                operation: outcome.operation,
                kind: outcome.kind,
                verdict: outcome.verdict.as_str(),
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records a serving certificate load.
    pub fn certificate_loaded(&self, not_after_unix: i64) {
        self.cert_reloads.inc();
        self.cert_not_after.set(not_after_unix);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
