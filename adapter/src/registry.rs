//! Publishing an adapter image after training and pulling it before inference.

use std::path::{Path, PathBuf};

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::adapter_files::{ADAPTER_CONFIG, ADAPTER_MODEL, check_adapter_dir};
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
    let auth = auth_for(&reference, opts)?;
    let no_adapter = || {
        format!(
            "image {image_ref} has no adapter: expected data/{ADAPTER_CONFIG} and \
             data/{ADAPTER_MODEL}"
        )
    };
    let client = client(opts)?;
    tracing::info!(image = %reference, "pulling adapter image");
    let data = match client
        .pull(&reference, &auth, image::ACCEPTED_LAYER_TYPES.to_vec())
        .await
    {
        Ok(data) => data,
        Err(e @ OciDistributionError::IncompatibleLayerMediaTypeError(_)) => {
            return Err(format!("{} ({e})", no_adapter()));
        }
        Err(e) => {
            return Err(describe(
                &e,
                &format!("pull {image_ref}"),
                reference.resolve_registry(),
                &auth,
            ));
        }
    };
    std::fs::create_dir_all(output)
        .map_err(|e| format!("--output {}: cannot create it ({e})", output.display()))?;
    let mut budget = max_bytes;
    let mut written = 0;
    for (i, layer) in data.layers.iter().enumerate() {
        written += image::extract_layer(&layer.data, &layer.media_type, output, &mut budget)
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
