//! The adapter image's layer: building it (deterministic gzip tar with a `data/` directory)
//! and extracting the `data/` files of pulled layers safely.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use oci_client::client::{Config, ImageLayer};
use oci_client::manifest::{
    IMAGE_CONFIG_MEDIA_TYPE, IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE, IMAGE_DOCKER_LAYER_TAR_MEDIA_TYPE,
    IMAGE_LAYER_GZIP_MEDIA_TYPE, IMAGE_LAYER_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciDescriptor,
    OciImageManifest,
};
use sha2::{Digest, Sha256};

use crate::adapter_files::ADAPTER_FILES;

/// The directory inside the layer that holds the adapter.
pub const DATA_DIR: &str = "data";
/// Fixed modification time of every entry (2000-01-01T00:00:00Z), so equal inputs give
/// byte-identical layers.
const FIXED_MTIME: u64 = 946_684_800;

/// The layer media types `pull` accepts.
pub const ACCEPTED_LAYER_TYPES: [&str; 4] = [
    IMAGE_LAYER_GZIP_MEDIA_TYPE,
    IMAGE_LAYER_MEDIA_TYPE,
    IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE,
    IMAGE_DOCKER_LAYER_TAR_MEDIA_TYPE,
];

/// An adapter image ready to push.
pub struct AdapterImage {
    pub layer: ImageLayer,
    pub config: Config,
    pub manifest: OciImageManifest,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(FIXED_MTIME);
    h.set_size(size);
    h
}

/// The uncompressed tar: `data/`, then the adapter files in [`ADAPTER_FILES`] order.
fn build_tar(source: &Path) -> Result<Vec<u8>, String> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    let mut dir = header(tar::EntryType::Directory, 0o755, 0);
    builder
        .append_data(&mut dir, format!("{DATA_DIR}/"), std::io::empty())
        .map_err(|e| format!("cannot build the layer: {e}"))?;
    for name in ADAPTER_FILES {
        let path = source.join(name);
        let file = std::fs::File::open(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let len = file
            .metadata()
            .map_err(|e| format!("cannot stat {}: {e}", path.display()))?
            .len();
        let mut h = header(tar::EntryType::Regular, 0o644, len);
        builder
            .append_data(&mut h, format!("{DATA_DIR}/{name}"), file.take(len))
            .map_err(|e| format!("cannot add {} to the layer: {e}", path.display()))?;
    }
    builder
        .into_inner()
        .map_err(|e| format!("cannot finish the layer: {e}"))
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    // GzBuilder writes mtime 0 and no file name: the compressed bytes depend on content only.
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    enc.write_all(bytes)
        .map_err(|e| format!("cannot compress the layer: {e}"))?;
    enc.finish()
        .map_err(|e| format!("cannot compress the layer: {e}"))
}

/// Builds the layer, the image config and the manifest for the adapter in `source` (which the
/// caller has checked holds both adapter files).
pub fn build(source: &Path) -> Result<AdapterImage, String> {
    let tar = build_tar(source)?;
    let diff_id = sha256(&tar);
    let layer_bytes = gzip(&tar)?;
    drop(tar);
    let layer_digest = sha256(&layer_bytes);
    let layer_size = i64::try_from(layer_bytes.len()).unwrap_or(i64::MAX);

    // A minimal valid image config: platform fields and the rootfs' diff_ids.
    let config_json = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config_bytes =
        serde_json::to_vec(&config_json).map_err(|e| format!("cannot encode the config: {e}"))?;
    let config_descriptor = OciDescriptor {
        media_type: IMAGE_CONFIG_MEDIA_TYPE.to_string(),
        digest: sha256(&config_bytes),
        size: i64::try_from(config_bytes.len()).unwrap_or(i64::MAX),
        ..OciDescriptor::default()
    };
    let layer_descriptor = OciDescriptor {
        media_type: IMAGE_LAYER_GZIP_MEDIA_TYPE.to_string(),
        digest: layer_digest,
        size: layer_size,
        ..OciDescriptor::default()
    };
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_string()),
        config: config_descriptor,
        layers: vec![layer_descriptor],
        subject: None,
        artifact_type: None,
        annotations: None,
    };
    Ok(AdapterImage {
        layer: ImageLayer::new(layer_bytes, IMAGE_LAYER_GZIP_MEDIA_TYPE.to_string(), None),
        config: Config::new(config_bytes, IMAGE_CONFIG_MEDIA_TYPE.to_string(), None),
        manifest,
    })
}

/// The path under `data/` that a tar entry names, `None` when it lies outside `data/`, or an
/// error when it is unsafe (absolute, or with `..`).
fn data_relative(raw: &Path) -> Result<Option<PathBuf>, String> {
    let shown = raw.display();
    let mut parts = Vec::new();
    let mut absolute = false;
    for c in raw.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => parts.push(p.to_os_string()),
            Component::RootDir | Component::Prefix(_) => absolute = true,
            Component::ParentDir => {
                return Err(format!(
                    "layer entry {shown:?} contains \"..\"; refusing it"
                ));
            }
        }
    }
    if parts.first().is_none_or(|first| first != DATA_DIR) {
        return Ok(None);
    }
    if absolute {
        return Err(format!(
            "layer entry {shown:?} is an absolute path; adapter files must be under data/"
        ));
    }
    Ok(Some(parts.iter().skip(1).collect()))
}

/// Extracts the `data/` entries of one layer (`bytes`, of `media_type`) into `out`.
/// Returns how many regular files were written; `budget` is the bytes still allowed.
pub fn extract_layer(
    bytes: &[u8],
    media_type: &str,
    out: &Path,
    budget: &mut u64,
) -> Result<usize, String> {
    let reader: Box<dyn Read + '_> = if media_type.ends_with("gzip") {
        Box::new(GzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| format!("layer is not a tar archive: {e}"))?;
    let mut written = 0;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("layer is not a valid tar archive: {e}"))?;
        let raw = entry
            .path()
            .map_err(|e| format!("layer entry has an unreadable path: {e}"))?
            .into_owned();
        let Some(rel) = data_relative(&raw)? else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(format!(
                "layer entry {:?} is a link; adapter images may hold only regular files under data/",
                raw.display()
            ));
        }
        let dest = out.join(&rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&dest)
                .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) || rel.as_os_str().is_empty() {
            continue;
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size > *budget {
            return Err(format!(
                "layer entry {:?} ({size} bytes) exceeds --max-bytes",
                raw.display()
            ));
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        // A previous layer may have left a file there; replace it (never follow a link).
        let _ = std::fs::remove_file(&dest);
        let mut file = std::fs::File::create(&dest)
            .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        let copied = std::io::copy(&mut (&mut entry).take(size), &mut file)
            .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
        *budget -= copied;
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_outside_data_are_ignored_and_unsafe_ones_refused() {
        let ok = |p: &str| data_relative(Path::new(p));
        assert_eq!(ok("data/a.json"), Ok(Some(PathBuf::from("a.json"))));
        assert_eq!(ok("./data/x/y"), Ok(Some(PathBuf::from("x/y"))));
        assert_eq!(ok("usr/bin/sh"), Ok(None));
        assert!(ok("data/../../etc/passwd").is_err());
        assert!(ok("/data/a.json").is_err());
        assert!(ok("../x").is_err());
    }

    fn tar_with(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = header(*kind, 0o644, data.len() as u64);
            if let Some(link) = link {
                h.set_link_name(link).expect("link name");
                h.set_size(0);
            }
            h.set_path(path).expect("path");
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn links_under_data_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut budget = u64::MAX;
        for kind in [tar::EntryType::Symlink, tar::EntryType::Link] {
            let t = tar_with(&[("data/evil", kind, b"", Some("/etc/passwd"))]);
            let err = extract_layer(&t, IMAGE_LAYER_MEDIA_TYPE, dir.path(), &mut budget)
                .expect_err("links are refused");
            assert!(err.contains("is a link"), "{err}");
        }
    }

    #[test]
    fn budget_is_enforced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = tar_with(&[("data/big", tar::EntryType::Regular, &[7; 100], None)]);
        let mut budget = 10;
        let err = extract_layer(&t, IMAGE_LAYER_MEDIA_TYPE, dir.path(), &mut budget)
            .expect_err("over budget");
        assert!(err.contains("--max-bytes"), "{err}");
    }

    #[test]
    fn layer_is_deterministic() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("adapter_config.json"), b"{}").expect("write");
        std::fs::write(dir.path().join("adapter_model.safetensors"), b"x").expect("write");
        let a = build(dir.path()).expect("build");
        let b = build(dir.path()).expect("build");
        assert_eq!(a.layer.data, b.layer.data);
        assert_eq!(a.manifest.layers[0].digest, b.manifest.layers[0].digest);
        assert_eq!(a.manifest.config.digest, b.manifest.config.digest);
        let out = tempfile::tempdir().expect("tempdir");
        let mut budget = u64::MAX;
        let n = extract_layer(
            &a.layer.data,
            IMAGE_LAYER_GZIP_MEDIA_TYPE,
            out.path(),
            &mut budget,
        )
        .expect("extract");
        assert_eq!(n, 2);
        assert_eq!(
            std::fs::read(out.path().join("adapter_model.safetensors")).expect("read"),
            b"x"
        );
    }
}
