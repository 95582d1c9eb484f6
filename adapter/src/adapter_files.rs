//! The two files that make a LoRA adapter, and their checks.

use std::io::Read;
use std::path::Path;

/// The adapter's configuration (PEFT `adapter_config.json`).
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter's weights.
pub const ADAPTER_MODEL: &str = "adapter_model.safetensors";
/// The files of an adapter, in the order they are written into the layer.
pub const ADAPTER_FILES: [&str; 2] = [ADAPTER_CONFIG, ADAPTER_MODEL];

/// The largest safetensors header accepted (the format's own readers use 100 MB).
const MAX_HEADER: u64 = 100 * 1024 * 1024;

/// Checks that `path` holds a JSON document.
pub fn check_config(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    Ok(())
}

/// Checks that `path` starts with a valid safetensors header: an 8-byte little-endian length
/// and that many bytes of JSON object, whose tensors' data offsets lie inside the file.
pub fn check_safetensors(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
    let file_len = file
        .metadata()
        .map_err(|e| format!("cannot stat {shown}: {e}"))?
        .len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes).map_err(|_| {
        format!("{shown} is not a safetensors file: shorter than its 8-byte header length")
    })?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len == 0 || header_len > MAX_HEADER || header_len > file_len.saturating_sub(8) {
        return Err(format!(
            "{shown} is not a safetensors file: header length {header_len} does not fit the \
             file ({file_len} bytes)"
        ));
    }
    let mut header = vec![0u8; usize::try_from(header_len).unwrap_or(0)];
    file.read_exact(&mut header)
        .map_err(|e| format!("cannot read the header of {shown}: {e}"))?;
    let value: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| format!("{shown} is not a safetensors file: its header is not JSON ({e})"))?;
    let Some(tensors) = value.as_object() else {
        return Err(format!(
            "{shown} is not a safetensors file: its header is not a JSON object"
        ));
    };
    let data_len = file_len - 8 - header_len;
    for (name, info) in tensors {
        if name == "__metadata__" {
            continue;
        }
        let offsets = info
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .and_then(|o| Some((o.first()?.as_u64()?, o.get(1)?.as_u64()?)));
        match offsets {
            Some((start, end)) if start <= end && end <= data_len => {}
            _ => {
                return Err(format!(
                    "{shown} is not a valid safetensors file: tensor {name:?} has missing or \
                     out-of-range data_offsets (data is {data_len} bytes)"
                ));
            }
        }
    }
    Ok(())
}

/// Checks both files of an adapter in `dir`.
pub fn check_adapter_dir(dir: &Path) -> Result<(), String> {
    check_config(&dir.join(ADAPTER_CONFIG))?;
    check_safetensors(&dir.join(ADAPTER_MODEL))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("write test file");
        p
    }

    fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn valid_safetensors_passes_and_broken_ones_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = write(
            dir.path(),
            "good",
            &safetensors(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
        );
        assert_eq!(check_safetensors(&good), Ok(()));
        let short = write(dir.path(), "short", &[1, 2, 3]);
        assert!(check_safetensors(&short).is_err());
        let huge_len = write(dir.path(), "huge", &u64::MAX.to_le_bytes());
        assert!(check_safetensors(&huge_len).is_err());
        let not_json = write(dir.path(), "notjson", &safetensors("nope", &[]));
        assert!(check_safetensors(&not_json).is_err());
        let out_of_range = write(
            dir.path(),
            "range",
            &safetensors(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,800]}}"#,
                &[0; 8],
            ),
        );
        let err = check_safetensors(&out_of_range).expect_err("offsets past the end");
        assert!(err.contains("data_offsets"), "{err}");
    }

    #[test]
    fn config_must_be_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = write(dir.path(), "c.json", br#"{"r": 8}"#);
        assert_eq!(check_config(&good), Ok(()));
        let bad = write(dir.path(), "bad.json", b"{");
        assert!(
            check_config(&bad)
                .expect_err("bad")
                .contains("not valid JSON")
        );
    }
}
