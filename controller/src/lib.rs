//! The lean KAITO controller.
//!
//! Each Workspace goes through one pipeline ([`pipeline`]): **fetch** (async) → **plan**
//! (pure: [`plan`], the sizing code the webhook uses) → **provision** ([`provision`]) →
//! **desired** children (pure functions of workspace + plan + found objects, built by
//! [`inference`], [`tuning`], [`nodes`]) → **apply** what differs (server-side apply with one
//! field manager, deterministic names, owner references) → **status** (pure, recomputed from
//! observed objects every time: [`status`]). [`reconcile`] runs it inside kube-runtime's
//! finalizer.
//!
//! Everything that talks to the API server or a cloud lives in [`reconcile`],
//! [`pipeline::fetch`], [`pipeline::apply`], [`provision`] (`byo`, `karpenter`, `aks`),
//! [`leader`] and [`telemetry`]; everything else is pure and unit-tested.

pub mod azure;
pub mod config;
pub mod inference;
pub mod leader;
pub mod naming;
pub mod nodes;
pub mod ownership;
pub mod pipeline;
pub mod plan;
pub mod provision;
pub mod reconcile;
pub mod status;
pub mod telemetry;
pub mod tuning;

#[cfg(test)]
mod component_tests;
#[cfg(test)]
pub(crate) mod testutil;
