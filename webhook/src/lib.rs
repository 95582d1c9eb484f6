//! `kaito-webhook`: the admission webhook for `kaito.sh` Workspaces (`v1alpha1` and `v1beta1`).
//!
//! - [`review`]: AdmissionReview in, AdmissionReview out, around the pure rules of
//!   [`kaito_api::admission`] (defaults as a JSONPatch on `/mutate`, verdicts on `/validate`);
//! - [`server`]: the axum routers, the rustls HTTPS server with graceful shutdown, and the
//!   plain-HTTP health/metrics server;
//! - [`certs`], [`tls`], [`secret`]: where the serving certificate comes from (files re-read on
//!   change, a self-signed CA, or a Secret the webhook manages itself, with the CA written into
//!   the webhook configurations' `caBundle` and rotation before expiry);
//! - [`tuning_config`]: the ConfigMap a tuning workspace names, read with the webhook's
//!   Kubernetes client for `/validate`;
//! - [`hub`]: a Hugging Face id in `inference.preset.name`, resolved through the hub
//!   (`HF_ENDPOINT`) within a deadline and recorded on the Workspace by `/mutate`;
//! - [`metrics`]: Prometheus metrics.

pub mod certs;
pub mod hub;
pub mod metrics;
pub mod review;
pub mod secret;
pub mod server;
pub mod tls;
pub mod tuning_config;

pub use server::{AppState, admission_router, health_router};
