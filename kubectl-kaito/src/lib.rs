//! `kubectl kaito`: the kubectl plugin for kaito.sh Workspaces.
//!
//! Layers, as in kubectl-view-allocations: [`collect`] (API-server I/O) → [`compute`]
//! (pure) → [`render`] (pure, returns text). [`chat`] keeps its protocol logic pure and its
//! transport small; [`hub`] resolves a Hugging Face id for `models describe`; [`app`] wires
//! the commands.

pub mod app;
pub mod chat;
pub mod cli;
pub mod collect;
pub mod compute;
pub mod error;
pub mod hub;
pub mod render;

#[cfg(test)]
pub(crate) mod testutil;
