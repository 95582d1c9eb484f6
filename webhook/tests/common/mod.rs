//! Shared by the tests that talk HTTPS to the server on loopback: the admission request they
//! send and the client side of the exchange.

// Each test crate uses what it needs of this module.
#![allow(dead_code)]

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The AdmissionReview POSTed to /validate.
pub const BODY: &str = include_str!("../fixtures/create-seed-phi-3-v1alpha1.json");

/// The certificates in `ca_pem`, as the roots a client trusts.
pub fn roots(ca_pem: &str) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    Ok(roots)
}

/// Sends POST /validate with [`BODY`] (connection: close) on `tls` and reads the response to
/// its end.
pub async fn post_validate(
    tls: &mut (impl AsyncRead + AsyncWrite + Unpin),
) -> anyhow::Result<String> {
    let request = format!(
        "POST /validate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    tls.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}
