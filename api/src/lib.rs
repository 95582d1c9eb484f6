//! The `kaito.sh` Workspace API: types for `v1alpha1` and `v1beta1`, the well-known labels,
//! annotations, condition types and reasons, and the generated CustomResourceDefinition.
//!
//! It also holds admission (`admission`): defaulting, validation and planning as pure
//! functions, shared by the webhook, the controller and `kubectl kaito create --dry-run`. It
//! depends on kube's derive/core parts and on k8s-openapi, never on kube's client, tokio or
//! hyper, so every component shares it without pulling in a runtime.

pub mod admission;
pub mod constants;
pub mod crd;
pub mod reasons;
pub mod types;

pub use constants::*;
pub use reasons::{Reason, UnknownReason};
pub use types::*;
