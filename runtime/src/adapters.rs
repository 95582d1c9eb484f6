//! PEFT LoRA adapters with strength.
//!
//! Each directory under the adapters directory (`/mnt/adapter/<name>/`) holds a PEFT adapter:
//! `adapter_config.json` and `adapter_model.safetensors`. Its strength (0..=1, default 1) comes
//! from the environment variable named after the adapter, as upstream KAITO's pod spec sets it.
//!
//! mistral.rs 0.8.1 merges LoRA adapters into the base weights at load time
//! (`W += lora_alpha / r · B·A`) and finds adapters only through the Hugging Face cache API. So each
//! adapter is staged as a private cache entry, `models--kaito-adapter--<name>/snapshots/<rev>/`
//! with `refs/main`, whose `adapter_config.json` has `lora_alpha` multiplied by the strength; the
//! weights are linked, not copied. The merged delta therefore scales exactly with the strength, and
//! strength 0 leaves the base weights unchanged.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Organisation part of the repository id of staged adapters.
pub const STAGED_ORG: &str = "kaito-adapter";
const STAGED_REVISION: &str = "kaito-runtime-staged";

/// Errors while discovering or staging adapters.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// A file or directory could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The adapter directory lacks a required file.
    #[error("adapter `{name}` has no {file} in {dir}")]
    MissingFile {
        /// Adapter name.
        name: String,
        /// The missing file.
        file: &'static str,
        /// The adapter directory.
        dir: PathBuf,
    },
    /// `adapter_config.json` is not a usable LoRA config.
    #[error("adapter `{name}`: invalid adapter_config.json: {reason}")]
    InvalidConfig {
        /// Adapter name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The strength env var is not a number in 0..=1.
    #[error(
        "adapter `{name}`: strength `{value}` from env var `{name}` must be a number between 0 and 1"
    )]
    InvalidStrength {
        /// Adapter name (and env var name).
        name: String,
        /// The value found.
        value: String,
    },
}

/// An adapter found in the adapters directory.
#[derive(Clone, Debug, PartialEq)]
pub struct Adapter {
    /// Directory name, also the name of the strength env var.
    pub name: String,
    /// The adapter's directory.
    pub dir: PathBuf,
    /// Strength in 0..=1 that scales the adapter's delta.
    pub strength: f64,
}

impl Adapter {
    /// The repository id under which the staged copy is found in the private HF cache.
    pub fn staged_id(&self) -> String {
        format!("{STAGED_ORG}/{}", self.name)
    }
}

/// Parses a strength value; `None` (unset) means full strength.
pub fn parse_strength(name: &str, value: Option<&str>) -> Result<f64, AdapterError> {
    let Some(raw) = value else {
        return Ok(1.0);
    };
    match raw.trim().parse::<f64>() {
        Ok(s) if (0.0..=1.0).contains(&s) => Ok(s),
        _ => Err(AdapterError::InvalidStrength {
            name: name.to_string(),
            value: raw.to_string(),
        }),
    }
}

/// Lists the adapters in `dir` (sorted by name), reading each strength through `env`.
/// A missing `dir` means no adapters.
pub fn discover(
    dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Adapter>, AdapterError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| AdapterError::Io {
            action,
            path,
            source,
        }
    };
    let mut adapters = Vec::new();
    for entry in fs::read_dir(dir).map_err(io("reading", dir))? {
        let entry = entry.map_err(io("reading", dir))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // e.g. Kubernetes' `..data` links of projected volumes
        }
        for file in ["adapter_config.json", "adapter_model.safetensors"] {
            if !path.join(file).is_file() {
                return Err(AdapterError::MissingFile {
                    name,
                    file,
                    dir: path,
                });
            }
        }
        let strength = parse_strength(&name, env(&name).as_deref())?;
        adapters.push(Adapter {
            name,
            dir: path,
            strength,
        });
    }
    adapters.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(adapters)
}

/// Returns the adapter config with `lora_alpha` scaled by `strength` and `target_modules` as a
/// list (mistral.rs reads it as a set).
pub fn scaled_config(name: &str, config: &str, strength: f64) -> Result<Value, AdapterError> {
    let invalid = |reason: String| AdapterError::InvalidConfig {
        name: name.to_string(),
        reason,
    };
    let mut value: Value = serde_json::from_str(config).map_err(|e| invalid(e.to_string()))?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| invalid("not a JSON object".into()))?;
    let rank = obj.get("r").and_then(Value::as_u64).unwrap_or(0);
    if rank == 0 {
        return Err(invalid("`r` must be a positive integer".into()));
    }
    let alpha = match obj.get("lora_alpha") {
        Some(v) => v
            .as_f64()
            .ok_or_else(|| invalid("`lora_alpha` must be a number".into()))?,
        None => rank as f64,
    };
    obj.insert("lora_alpha".into(), Value::from(alpha * strength));
    match obj.get("target_modules") {
        Some(Value::String(s)) => {
            let list = Value::Array(vec![Value::String(s.clone())]);
            obj.insert("target_modules".into(), list);
        }
        Some(Value::Array(_)) => {}
        _ => {
            return Err(invalid(
                "`target_modules` must be a list or a string".into(),
            ));
        }
    }
    Ok(value)
}

/// Stages `adapter` into the HF hub cache directory `cache_dir` and returns the id to load it by.
pub fn stage(adapter: &Adapter, cache_dir: &Path) -> Result<String, AdapterError> {
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| AdapterError::Io {
            action,
            path,
            source,
        }
    };
    let config_path = adapter.dir.join("adapter_config.json");
    let config = fs::read_to_string(&config_path).map_err(io("reading", &config_path))?;
    let scaled = scaled_config(&adapter.name, &config, adapter.strength)?;

    let repo = cache_dir.join(format!("models--{STAGED_ORG}--{}", adapter.name));
    if repo.exists() {
        fs::remove_dir_all(&repo).map_err(io("removing", &repo))?;
    }
    let snapshot = repo.join("snapshots").join(STAGED_REVISION);
    fs::create_dir_all(&snapshot).map_err(io("creating", &snapshot))?;
    let refs = repo.join("refs");
    fs::create_dir_all(&refs).map_err(io("creating", &refs))?;
    let main = refs.join("main");
    fs::write(&main, STAGED_REVISION).map_err(io("writing", &main))?;
    let staged_config = snapshot.join("adapter_config.json");
    let text = serde_json::to_string_pretty(&scaled).unwrap_or_default();
    fs::write(&staged_config, text).map_err(io("writing", &staged_config))?;
    let weights = adapter.dir.join("adapter_model.safetensors");
    let weights = fs::canonicalize(&weights).map_err(io("resolving", &weights))?;
    let link = snapshot.join("adapter_model.safetensors");
    std::os::unix::fs::symlink(&weights, &link).map_err(io("linking", &link))?;
    Ok(adapter.staged_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strength_parsing() {
        assert_eq!(parse_strength("a", None).ok(), Some(1.0));
        assert_eq!(parse_strength("a", Some("0")).ok(), Some(0.0));
        assert_eq!(parse_strength("a", Some(" 0.25 ")).ok(), Some(0.25));
        assert!(parse_strength("a", Some("1.5")).is_err());
        assert!(parse_strength("a", Some("-0.1")).is_err());
        assert!(parse_strength("a", Some("full")).is_err());
    }

    #[test]
    fn config_scaling() {
        let cfg = r#"{"r": 8, "lora_alpha": 16, "target_modules": "q_proj|v_proj"}"#;
        let v = scaled_config("a", cfg, 0.5).unwrap_or_default();
        assert_eq!(v["lora_alpha"], 8.0);
        assert_eq!(v["target_modules"], serde_json::json!(["q_proj|v_proj"]));
        let zero = scaled_config("a", cfg, 0.0).unwrap_or_default();
        assert_eq!(zero["lora_alpha"], 0.0);
        assert!(scaled_config("a", r#"{"r": 0, "target_modules": []}"#, 1.0).is_err());
        assert!(scaled_config("a", r#"{"r": 4}"#, 1.0).is_err());
        assert!(scaled_config("a", "not json", 1.0).is_err());
    }

    #[test]
    fn discover_and_stage() {
        let root = std::env::temp_dir().join(format!("kaito-adapters-{}", std::process::id()));
        let adapters_dir = root.join("adapters");
        let a = adapters_dir.join("alpha");
        let b = adapters_dir.join("beta");
        for d in [&a, &b] {
            fs::create_dir_all(d).unwrap_or_default();
            let cfg = r#"{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}"#;
            fs::write(d.join("adapter_config.json"), cfg).unwrap_or_default();
            fs::write(d.join("adapter_model.safetensors"), b"x").unwrap_or_default();
        }
        let env = |name: &str| (name == "alpha").then(|| "0.5".to_string());
        let found = discover(&adapters_dir, env).unwrap_or_default();
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].name.as_str(), found[0].strength), ("alpha", 0.5));
        assert_eq!((found[1].name.as_str(), found[1].strength), ("beta", 1.0));

        let cache = root.join("hub");
        let id = stage(&found[0], &cache).unwrap_or_default();
        assert_eq!(id, "kaito-adapter/alpha");
        let repo = cache.join("models--kaito-adapter--alpha");
        let rev = fs::read_to_string(repo.join("refs/main")).unwrap_or_default();
        let snap = repo.join("snapshots").join(rev);
        let staged: Value = serde_json::from_str(
            &fs::read_to_string(snap.join("adapter_config.json")).unwrap_or_default(),
        )
        .unwrap_or_default();
        assert_eq!(staged["lora_alpha"], 4.0);
        assert!(snap.join("adapter_model.safetensors").is_file());
        // Staging again replaces the previous copy.
        assert!(stage(&found[0], &cache).is_ok());

        fs::remove_file(a.join("adapter_model.safetensors")).unwrap_or_default();
        assert!(matches!(
            discover(&adapters_dir, |_| None),
            Err(AdapterError::MissingFile { .. })
        ));
        assert!(discover(&root.join("absent"), |_| None).is_ok_and(|v| v.is_empty()));
        fs::remove_dir_all(&root).unwrap_or_default();
    }
}
