//! Publishing an adapter image after training and pulling it before inference.

use std::path::{Path, PathBuf};

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::adapter_files::{ADAPTER_CONFIG, ADAPTER_MODEL, check_adapter_dir};
use crate::fetch::registry_blocked_reason;
use crate::{docker_config, image};

/// How to reach the registry.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// The docker config JSON with credentials (`--docker-config`); `None`: the default file.
    pub docker_config: Option<PathBuf>,
    /// Registries (`host:port`) spoken to over plain http (`--insecure-registry`).
    pub insecure_registries: Vec<String>,
    /// Every registry over plain http (`--plain-http`).
    pub plain_http: bool,
    /// Extra PEM CA certificates to trust (`--ca-file`).
    pub ca_files: Vec<PathBuf>,
}

/// What a push produced.
#[derive(Debug)]
pub struct Published {
    pub manifest: OciImageManifest,
    pub manifest_url: String,
}

fn parse_reference(raw: &str, flag: &str) -> Result<Reference, String> {
    raw.parse::<Reference>().map_err(|e| {
        format!("{flag} {raw:?} is not an image reference ({e}); write e.g. registry.example.com:5000/adapters/my-adapter:v1")
    })
}

fn client(opts: &RegistryOptions) -> Result<Client, String> {
    crate::install_crypto_provider();
    let protocol = if opts.plain_http {
        ClientProtocol::Http
    } else if opts.insecure_registries.is_empty() {
        ClientProtocol::Https
    } else {
        ClientProtocol::HttpsExcept(opts.insecure_registries.clone())
    };
    let mut extra_root_certificates = Vec::new();
    for path in &opts.ca_files {
        let data = std::fs::read(path)
            .map_err(|e| format!("--ca-file {}: cannot read it ({e})", path.display()))?;
        extra_root_certificates.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    Ok(Client::new(ClientConfig {
        protocol,
        extra_root_certificates,
        // Adapters are single-platform images.
        platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        read_timeout: Some(std::time::Duration::from_secs(300)),
        ..ClientConfig::default()
    }))
}

fn auth_for(reference: &Reference, opts: &RegistryOptions) -> Result<RegistryAuth, String> {
    docker_config::registry_auth(opts.docker_config.as_deref(), reference.resolve_registry())
}

fn is_auth_error(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => true,
        OciDistributionError::ServerError { code, .. } => matches!(code, 401 | 403),
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|err| matches!(err.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)),
        OciDistributionError::RequestError(r) => r
            .status()
            .is_some_and(|s| s.as_u16() == 401 || s.as_u16() == 403),
        _ => false,
    }
}

fn describe(e: &OciDistributionError, what: &str, registry: &str, auth: &RegistryAuth) -> String {
    if is_auth_error(e) {
        let who = match auth {
            RegistryAuth::Anonymous => "no credentials (anonymous)".to_string(),
            RegistryAuth::Basic(user, _) => format!("user {user:?}"),
            RegistryAuth::Bearer(_) => "a registry token".to_string(),
        };
        return format!(
            "{what}: registry {registry} refused authentication with {who} ({e}); check the \
             auths[\"{registry}\"] entry of the docker config (--docker-config, the Secret's \
             .dockerconfigjson)"
        );
    }
    let mut msg = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

/// Resolves the registry host (`host[:port]`) and refuses addresses where no registry is
/// (cloud metadata, link-local, ...; see [`registry_blocked_reason`]), as the data fetcher
/// does for its URLs. The HTTP client resolves the name again when it connects.
async fn check_registry_address(registry: &str, flag: &str) -> Result<(), String> {
    let with_port = if registry.rsplit_once(':').is_some_and(|(h, p)| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':')
    }) {
        registry.to_string()
    } else {
        format!("{registry}:443")
    };
    let addrs = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| format!("{flag}: cannot resolve the registry {registry} ({e})"))?;
    for addr in addrs {
        if let Some(why) = registry_blocked_reason(addr.ip()) {
            return Err(format!(
                "{flag}: the registry {registry} resolves to {}, {why}; no registry is served \
                 there, so it is refused: name the registry by its own host name",
                addr.ip()
            ));
        }
    }
    Ok(())
}

/// Pushes the adapter in `source` as image `target`.
pub async fn publish(
    source: &Path,
    target: &str,
    opts: &RegistryOptions,
) -> Result<Published, String> {
    for name in [ADAPTER_CONFIG, ADAPTER_MODEL] {
        let path = source.join(name);
        if !path.is_file() {
            return Err(format!(
                "--source {}: {name} is missing; training must write {ADAPTER_CONFIG} and \
                 {ADAPTER_MODEL} there",
                source.display()
            ));
        }
    }
    check_adapter_dir(source).map_err(|e| format!("--source: {e}"))?;
    let reference = parse_reference(target, "--target")?;
    check_registry_address(reference.resolve_registry(), "--target").await?;
    let auth = auth_for(&reference, opts)?;
    let built = image::build(source)?;
    tracing::info!(
        image = %reference,
        layer = %built.manifest.layers.first().map(|l| l.digest.as_str()).unwrap_or(""),
        bytes = built.layer.data.len(),
        "pushing adapter image"
    );
    let manifest = built.manifest.clone();
    let client = client(opts)?;
    let response = client
        .push(
            &reference,
            std::slice::from_ref(&built.layer),
            built.config,
            &auth,
            Some(built.manifest),
        )
        .await
        .map_err(|e| {
            describe(
                &e,
                &format!("push {target}"),
                reference.resolve_registry(),
                &auth,
            )
        })?;
    Ok(Published {
        manifest,
        manifest_url: response.manifest_url,
    })
}

/// Pulls `image_ref` and extracts the `data/` files of its layers into `output`; at most
/// `max_bytes` are written.
pub async fn pull(
    image_ref: &str,
    output: &Path,
    max_bytes: u64,
    opts: &RegistryOptions,
) -> Result<Vec<PathBuf>, String> {
    let reference = parse_reference(image_ref, "--image")?;
    check_registry_address(reference.resolve_registry(), "--image").await?;
    let auth = auth_for(&reference, opts)?;
    let no_adapter = || {
        format!(
            "image {image_ref} has no adapter: expected data/{ADAPTER_CONFIG} and \
             data/{ADAPTER_MODEL}"
        )
    };
    let client = client(opts)?;
    tracing::info!(image = %reference, "pulling adapter image");
    let failed = |e: OciDistributionError| {
        describe(
            &e,
            &format!("pull {image_ref}"),
            reference.resolve_registry(),
            &auth,
        )
    };
    // The manifest first: the layers' declared types and sizes are checked before any layer
    // is downloaded, and each layer is then held in memory only up to its declared size.
    let (manifest, _) = client
        .pull_image_manifest(&reference, &auth)
        .await
        .map_err(failed)?;
    let layers = checked_layers(&manifest, max_bytes).map_err(|e| match e {
        LayerProblem::NotAdapter(why) => format!("{} ({why})", no_adapter()),
        LayerProblem::TooBig(why) => format!("image {image_ref}: {why}; nothing was downloaded"),
    })?;
    std::fs::create_dir_all(output)
        .map_err(|e| format!("--output {}: cannot create it ({e})", output.display()))?;
    let mut budget = max_bytes;
    let mut written = 0;
    for (i, (layer, size)) in layers.into_iter().enumerate() {
        let mut data = BoundedBuffer::new(size);
        client
            .pull_blob(&reference, layer, &mut data)
            .await
            .map_err(|e| format!("image {image_ref}, layer {i}: {}", failed(e)))?;
        written += image::extract_layer(&data.bytes, &layer.media_type, output, &mut budget)
            .map_err(|e| format!("image {image_ref}, layer {i}: {e}"))?;
    }
    tracing::info!(files = written, dir = %output.display(), "extracted data/ files");
    let config = output.join(ADAPTER_CONFIG);
    let model = output.join(ADAPTER_MODEL);
    if !config.is_file() || !model.is_file() {
        return Err(no_adapter());
    }
    check_adapter_dir(output).map_err(|e| format!("image {image_ref}: {e}"))?;
    Ok(vec![config, model])
}

/// Why a manifest's layers are not pulled.
#[derive(Debug, PartialEq, Eq)]
enum LayerProblem {
    /// A layer of a type that is not a filesystem layer.
    NotAdapter(String),
    /// More bytes than `--max-bytes` allows, or a size that is not a size.
    TooBig(String),
}

/// The layers of `manifest` with their declared sizes, when every one is a filesystem layer
/// and together they declare at most `max_bytes` (the compressed bytes the registry sends; the
/// extracted bytes are held to the same budget while extracting).
fn checked_layers(
    manifest: &OciImageManifest,
    max_bytes: u64,
) -> Result<Vec<(&oci_client::manifest::OciDescriptor, usize)>, LayerProblem> {
    let mut total: u64 = 0;
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for (i, layer) in manifest.layers.iter().enumerate() {
        if !image::ACCEPTED_LAYER_TYPES.contains(&layer.media_type.as_str()) {
            return Err(LayerProblem::NotAdapter(format!(
                "layer {i} has media type {}",
                layer.media_type
            )));
        }
        let size = u64::try_from(layer.size)
            .map_err(|_| LayerProblem::TooBig(format!("layer {i} declares size {}", layer.size)))?;
        total = total.saturating_add(size);
        if total > max_bytes {
            return Err(LayerProblem::TooBig(format!(
                "its layers declare at least {total} bytes, more than --max-bytes {max_bytes}"
            )));
        }
        let size = usize::try_from(size)
            .map_err(|_| LayerProblem::TooBig(format!("layer {i} declares size {size}")))?;
        layers.push((layer, size));
    }
    Ok(layers)
}

/// An in-memory layer that refuses bytes beyond the size its descriptor declares (a registry
/// that sends more is cut off instead of filling memory).
struct BoundedBuffer {
    bytes: Vec<u8>,
    limit: usize,
}

impl BoundedBuffer {
    fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(limit.min(64 << 20)),
            limit,
        }
    }
}

impl tokio::io::AsyncWrite for BoundedBuffer {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.bytes.len() + buf.len() > this.limit {
            return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                "the registry sent more than the layer's declared {} bytes",
                this.limit
            ))));
        }
        this.bytes.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::manifest::OciDescriptor;
    use tokio::io::AsyncWriteExt;

    fn manifest(layers: &[(&str, i64)]) -> OciImageManifest {
        OciImageManifest {
            layers: layers
                .iter()
                .map(|(media_type, size)| OciDescriptor {
                    media_type: media_type.to_string(),
                    size: *size,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn declared_sizes_are_held_to_the_budget_before_any_download() {
        let gz = image::ACCEPTED_LAYER_TYPES[0];
        assert_eq!(
            checked_layers(&manifest(&[(gz, 10), (gz, 20)]), 30)
                .map(|l| l.into_iter().map(|(_, s)| s).collect::<Vec<_>>()),
            Ok(vec![10, 20])
        );
        assert_eq!(
            checked_layers(&manifest(&[(gz, 10), (gz, 21)]), 30).map(|_| ()),
            Err(LayerProblem::TooBig(
                "its layers declare at least 31 bytes, more than --max-bytes 30".into()
            ))
        );
        assert!(matches!(
            checked_layers(&manifest(&[(gz, -1)]), 30),
            Err(LayerProblem::TooBig(_))
        ));
        assert!(matches!(
            checked_layers(
                &manifest(&[("application/vnd.oci.image.config.v1+json", 1)]),
                30
            ),
            Err(LayerProblem::NotAdapter(_))
        ));
    }

    #[tokio::test]
    async fn registries_at_metadata_addresses_are_refused_before_any_request() {
        let opts = RegistryOptions::default();
        let err = pull(
            "169.254.169.254/adapters/a:v1",
            Path::new("/nonexistent"),
            1,
            &opts,
        )
        .await
        .expect_err("metadata address");
        assert!(
            err.starts_with(
                "--image: the registry 169.254.169.254 resolves to 169.254.169.254, a cloud \
                 metadata address; no registry is served there"
            ),
            "{err}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(ADAPTER_CONFIG), br#"{"peft_type":"LORA"}"#).expect("w");
        let header = br#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
        let mut st = (header.len() as u64).to_le_bytes().to_vec();
        st.extend_from_slice(header);
        st.push(0);
        std::fs::write(dir.path().join(ADAPTER_MODEL), st).expect("w");
        let err = publish(dir.path(), "169.254.10.1:5000/adapters/a:v1", &opts)
            .await
            .expect_err("link-local address");
        assert!(
            err.contains("--target: the registry 169.254.10.1:5000 resolves to 169.254.10.1, a link-local address"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_layer_longer_than_declared_is_cut_off() {
        let mut b = BoundedBuffer::new(4);
        b.write_all(b"abcd").await.expect("within the size");
        let err = b.write_all(b"e").await.expect_err("beyond the size");
        assert!(err.to_string().contains("declared 4 bytes"), "{err}");
        assert_eq!(b.bytes, b"abcd");
    }
}
