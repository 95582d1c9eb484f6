//! kaito-adapter: the fine-tuning pipeline's helpers.
//!
//! * [`fetch`]: the tuning Job's data fetcher (init container). Downloads training data over
//!   http(s) only to public addresses: every resolved address and every redirect hop is checked,
//!   and the connection goes to the address that was checked.
//! * [`publish`]: after training, packs `adapter_config.json` and `adapter_model.safetensors`
//!   into one OCI image layer (`data/…`) and pushes it.
//! * [`pull`]: the inference init container; pulls such an image and extracts its `data/` files.

pub mod adapter_files;
pub mod docker_config;
pub mod fetch;
pub mod image;
pub mod registry;

/// Installs rustls' ring provider as the process default (both ring and aws-lc-rs are in the
/// dependency tree, so rustls cannot pick one by itself). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
