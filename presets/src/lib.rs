//! The knowledge every KAITO component shares: which models exist ([`PresetCatalog`]),
//! which GPU machines exist ([`SkuCatalog`], [`GpuShape`]), whether a model fits a machine
//! ([`sizing`]), and the installation's [`Cloud`] and [`Provisioner`] settings, parsed by the
//! webhook and the controller alike.
//!
//! Everything here is pure: the catalogs are data files embedded at build time (and
//! loadable from a file), and sizing is a plain function of its inputs. The crate does not
//! depend on tokio, hyper or a Kubernetes client, so the webhook, the controller and the
//! `kubectl kaito` plugin all call the very same code.

pub mod hub_model;
pub mod memory;
pub mod models;
pub mod provisioner;
pub mod sizing;
pub mod skus;

pub use hub_model::{HubId, ModelFacts};
pub use memory::Memory;
pub use models::{CatalogError, Preset, PresetCatalog};
pub use provisioner::Provisioner;
pub use sizing::{Dtype, Mode, Plan, Problem, RuntimeParams};
pub use skus::{Cloud, ComputeCapability, GpuShape, ShapeError, Sku, SkuCatalog};
