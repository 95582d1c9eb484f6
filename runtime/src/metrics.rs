//! Prometheus metrics of the serving runtime, all in one registry served at `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route, e.g. `/v1/chat/completions`.
    pub route: String,
    /// The HTTP status code answered.
    pub status: u16,
}

/// Labels of the timed-out connection counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    /// `write` (the client stopped reading) or `header_read` (no complete request head).
    pub reason: &'static str,
}

/// All metrics of the runtime.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from admission to the first generated token, in seconds.
    pub time_to_first_token: Histogram,
    /// Time between consecutive generated tokens of a stream, in seconds.
    pub inter_token_latency: Histogram,
    /// End-to-end generation time per request, in seconds.
    pub request_duration: Histogram,
    /// Tokens generated.
    pub generated_tokens: Counter,
    /// Prompt tokens processed.
    pub prompt_tokens: Counter,
    /// Sequences being generated now.
    pub running: Gauge,
    /// Requests waiting for a generation slot now.
    pub queued: Gauge,
    /// Requests refused: the queue was full (429) or they waited past the queue timeout (503).
    pub rejected: Counter,
    /// Connections closed by a timeout, by reason.
    pub timed_out: Family<TimeoutLabels, Counter>,
    /// Seconds the model took to load.
    pub model_load_seconds: Gauge<f64, AtomicU64>,
    /// 1 once the model is loaded and the server is ready.
    pub model_ready: Gauge,
    /// The weights download: bytes done, total, fetched, retries.
    pub download: crate::download::Progress,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the metrics and registers them under the `kaito_runtime` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kaito_runtime");
        let requests = Family::<RequestLabels, Counter>::default();
        let time_to_first_token = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let inter_token_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let request_duration = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        let generated_tokens = Counter::default();
        let prompt_tokens = Counter::default();
        let running = Gauge::default();
        let queued = Gauge::default();
        let rejected = Counter::default();
        let timed_out = Family::<TimeoutLabels, Counter>::default();
        let model_load_seconds = Gauge::<f64, AtomicU64>::default();
        let model_ready = Gauge::default();
        registry.register(
            "requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Time from admission to the first generated token",
            time_to_first_token.clone(),
        );
        registry.register(
            "inter_token_latency_seconds",
            "Time between consecutive streamed tokens",
            inter_token_latency.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from admission to the end of generation",
            request_duration.clone(),
        );
        registry.register(
            "generated_tokens",
            "Tokens generated",
            generated_tokens.clone(),
        );
        registry.register(
            "prompt_tokens",
            "Prompt tokens processed",
            prompt_tokens.clone(),
        );
        registry.register(
            "running_sequences",
            "Sequences being generated now",
            running.clone(),
        );
        registry.register(
            "queued_requests",
            "Requests waiting for a generation slot",
            queued.clone(),
        );
        registry.register(
            "rejected_requests",
            "Requests refused: 429 for a full queue, 503 past the queue timeout",
            rejected.clone(),
        );
        registry.register(
            "connections_timed_out",
            "Connections closed by a timeout: write (the client stopped reading), header_read",
            timed_out.clone(),
        );
        registry.register(
            "model_load_seconds",
            "Seconds the model took to load",
            model_load_seconds.clone(),
        );
        registry.register(
            "model_ready",
            "1 once the model is loaded",
            model_ready.clone(),
        );
        let download = crate::download::Progress::default();
        registry.register(
            "model_download_bytes",
            "Bytes of the model's files in place or downloaded so far (verified cache hits count)",
            download.done.clone(),
        );
        registry.register(
            "model_download_size_bytes",
            "Bytes of all the model's files to download (0 until the hub has listed them)",
            download.total.clone(),
        );
        registry.register(
            "model_download_fetched_bytes",
            "Bytes fetched from the hub",
            download.fetched.clone(),
        );
        registry.register(
            "model_download_retries",
            "Download requests retried after a cut connection, a 5xx/429 or a failed check",
            download.retries.clone(),
        );
        Self {
            registry,
            download,
            requests,
            time_to_first_token,
            inter_token_latency,
            request_duration,
            generated_tokens,
            prompt_tokens,
            running,
            queued,
            rejected,
            timed_out,
            model_load_seconds,
            model_ready,
        }
    }

    /// Renders the registry in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_series() {
        let m = Metrics::new();
        m.requests
            .get_or_create(&RequestLabels {
                route: "/chat".into(),
                status: 200,
            })
            .inc();
        m.time_to_first_token.observe(0.01);
        let text = m.encode().unwrap_or_default();
        assert!(text.contains("kaito_runtime_requests_total{route=\"/chat\",status=\"200\"} 1"));
        assert!(text.contains("kaito_runtime_time_to_first_token_seconds_count 1"));
        assert!(text.contains("kaito_runtime_queued_requests 0"));
    }
}
