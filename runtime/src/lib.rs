//! KAITO serving runtime on mistral.rs.
//!
//! Layers: [`engine`] wraps mistral.rs (loading, adapters, generation); [`server`] is the axum
//! router (KAITO's `/chat`, the OpenAI-compatible API, health, metrics) with admission control;
//! [`conn`] serves the router over HTTP/1 connections with header limits and timeouts;
//! [`download`] fetches the weights from a Hugging Face hub before loading;
//! [`cli`] holds the flags of the thin `kaito-runtime` binary and [`run`] ties them together.
//! [`testmodel`] writes tiny random-weight models for tests, demos and benchmarks.

pub mod adapters;
pub mod api;
pub mod cli;
pub mod conn;
pub mod download;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod server;
pub mod testmodel;

pub use cli::{ServeArgs, run};
