//! The user's runtime parameters (`inference.config`): the `inference_config.yaml` of a
//! ConfigMap, in upstream KAITO's format —
//!
//! ```yaml
//! max_probe_steps: 6
//! vllm:
//!   gpu-memory-utilization: 0.95
//!   max-model-len: 131072
//!   max-num-seqs: 32
//!   dtype: bfloat16
//! ```
//!
//! — mapped onto what `kaito-runtime` (mistral.rs) has: `vllm.max-model-len` → `--max-model-len`
//! (the context limit; never above what the GPU's KV cache was sized for), `vllm.max-num-seqs` →
//! `--max-running`, `vllm.dtype` → `--dtype`. Every other key is reported as a warning naming
//! it (vLLM's memory and scheduler knobs have no mistral.rs equivalent), never silently dropped;
//! a value of the wrong type, or a file that is not this shape, is an error on
//! `inference.config` that names the key and the fix, never the value (described by its type)
//! or a line of the text. Nothing here does I/O: the webhook and the controller read the
//! ConfigMap and hand its data in.

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::FieldError;
use super::tuning_config::{yaml_error_location, yaml_kind};

/// The ConfigMap key holding the runtime parameters.
pub const INFERENCE_CONFIG_KEY: &str = "inference_config.yaml";
/// The section of upstream's file with the engine parameters.
pub const ENGINE_SECTION: &str = "vllm";

const FIELD: &str = "inference.config";

/// Runtime parameters a ConfigMap sets, as `kaito-runtime` takes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineParams {
    /// `--max-model-len`: context limit in tokens.
    pub max_model_len: Option<u64>,
    /// `--max-running`: sequences generated at once.
    pub max_running: Option<u64>,
    /// `--dtype`: `auto`, `bf16`, `f16` or `f32`.
    pub dtype: Option<&'static str>,
}

impl EngineParams {
    /// The runtime flags other than `--dtype` (which replaces the sizing's choice), with the
    /// context limit capped at `sized_limit` (what the GPU's KV cache holds, when sizing
    /// shortened the context).
    pub fn args(&self, sized_limit: Option<u64>) -> Vec<String> {
        let mut args = Vec::new();
        let len = match (self.max_model_len, sized_limit) {
            (Some(want), Some(limit)) => Some(want.min(limit)),
            (want, _) => want,
        };
        if let Some(len) = len {
            args.extend(["--max-model-len".to_owned(), len.to_string()]);
        }
        if let Some(n) = self.max_running {
            args.extend(["--max-running".to_owned(), n.to_string()]);
        }
        args
    }
}

/// What a valid `inference_config.yaml` gives: the parameters applied, and a warning for each
/// key that is not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InferenceConfig {
    /// The parameters applied.
    pub params: EngineParams,
    /// One line per key that `kaito-runtime` does not apply.
    pub warnings: Vec<String>,
}

fn positive(key: &str, value: &Value) -> Result<u64, String> {
    value.as_u64().filter(|n| *n > 0).ok_or_else(|| {
        let what = match value {
            Value::Number(_) => "zero, negative or fractional",
            other => yaml_kind(other),
        };
        format!("{ENGINE_SECTION}.{key} must be a positive whole number, not {what}")
    })
}

fn dtype(value: &Value) -> Result<&'static str, String> {
    match value.as_str().map(str::to_ascii_lowercase).as_deref() {
        Some("auto") => Ok("auto"),
        Some("bfloat16" | "bf16") => Ok("bf16"),
        Some("float16" | "half" | "f16" | "fp16") => Ok("f16"),
        Some("float32" | "float" | "f32" | "fp32") => Ok("f32"),
        _ => Err(format!(
            "{ENGINE_SECTION}.dtype must be auto, bfloat16, float16 or float32, not {}",
            match value {
                Value::String(_) => "another string",
                other => yaml_kind(other),
            }
        )),
    }
}

/// Reads the text of an `inference_config.yaml`. Errors are on `inference.config`.
pub fn parse_inference_config(yaml_text: &str) -> Result<InferenceConfig, Vec<FieldError>> {
    let fail = |message: String| vec![FieldError::new(FIELD, message)];
    let doc: Value = serde_yaml::from_str(yaml_text).map_err(|err| {
        fail(format!(
            "{INFERENCE_CONFIG_KEY} is not valid YAML ({}): fix the syntax",
            yaml_error_location(&err)
        ))
    })?;
    let root = match &doc {
        Value::Null => return Ok(InferenceConfig::default()),
        Value::Mapping(m) => m,
        _ => {
            return Err(fail(format!(
                "{INFERENCE_CONFIG_KEY} must be a mapping with a `{ENGINE_SECTION}:` section"
            )));
        }
    };
    let mut config = InferenceConfig::default();
    let mut errors = Vec::new();
    for (key, value) in root {
        match key.as_str() {
            Some(ENGINE_SECTION) => {
                let Some(section) = value.as_mapping() else {
                    if !value.is_null() {
                        errors.push(format!(
                            "{ENGINE_SECTION} must be a mapping of engine parameters"
                        ));
                    }
                    continue;
                };
                for (k, v) in section {
                    let name = k.as_str().unwrap_or("?");
                    let applied = match name {
                        "max-model-len" => {
                            positive(name, v).map(|n| config.params.max_model_len = Some(n))
                        }
                        "max-num-seqs" => {
                            positive(name, v).map(|n| config.params.max_running = Some(n))
                        }
                        "dtype" => dtype(v).map(|d| config.params.dtype = Some(d)),
                        _ => {
                            config.warnings.push(format!(
                                "{FIELD}: {ENGINE_SECTION}.{name} is not applied: kaito-runtime \
                                 (mistral.rs) has no such setting; it applies max-model-len, \
                                 max-num-seqs and dtype"
                            ));
                            Ok(())
                        }
                    };
                    if let Err(e) = applied {
                        errors.push(e);
                    }
                }
            }
            Some(other) => config.warnings.push(format!(
                "{FIELD}: {other} is not applied: kaito-runtime reads only the `{ENGINE_SECTION}:` \
                 section"
            )),
            None => errors.push(format!(
                "{INFERENCE_CONFIG_KEY} has a key that is not a string"
            )),
        }
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors
            .into_iter()
            .map(|m| FieldError::new(FIELD, m))
            .collect())
    }
}

/// Reads the data of the ConfigMap named `config_map`.
pub fn parse_inference_config_map(
    config_map: &str,
    data: Option<&BTreeMap<String, String>>,
) -> Result<InferenceConfig, Vec<FieldError>> {
    let Some(text) = data.and_then(|d| d.get(INFERENCE_CONFIG_KEY)) else {
        return Err(vec![FieldError::new(
            FIELD,
            format!(
                "ConfigMap {config_map:?} has no key {INFERENCE_CONFIG_KEY}: put the runtime \
                 parameters under data.{INFERENCE_CONFIG_KEY}, or remove inference.config"
            ),
        )]);
    };
    parse_inference_config(text).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| FieldError::new(e.field, format!("ConfigMap {config_map:?}: {}", e.message)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_example_maps_what_mistralrs_has_and_names_the_rest() {
        let c = parse_inference_config(
            "max_probe_steps: 6\nvllm:\n  cpu-offload-gb: 0\n  gpu-memory-utilization: 0.95\n  \
             swap-space: 4\n  max-model-len: 131072\n  max-num-seqs: 8\n  dtype: bfloat16\n",
        )
        .expect("valid");
        assert_eq!(
            c.params,
            EngineParams {
                max_model_len: Some(131_072),
                max_running: Some(8),
                dtype: Some("bf16"),
            }
        );
        assert_eq!(c.warnings.len(), 4, "{:?}", c.warnings);
        assert!(c.warnings[0].starts_with("inference.config: max_probe_steps is not applied"));
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("vllm.gpu-memory-utilization is not applied"))
        );
        assert_eq!(
            c.params.args(Some(9_000)),
            ["--max-model-len", "9000", "--max-running", "8"],
            "never above what the KV cache was sized for"
        );
        assert_eq!(c.params.args(None)[1], "131072");
    }

    #[test]
    fn bad_values_are_errors_that_name_the_key() {
        let errs = parse_inference_config("vllm:\n  max-model-len: -1\n  dtype: int8\n")
            .expect_err("invalid");
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 2, "{text:?}");
        assert!(text[0].contains("vllm.max-model-len must be a positive whole number"));
        assert!(text[1].contains("vllm.dtype must be auto, bfloat16, float16 or float32"));
        assert!(errs.iter().all(|e| e.field == "inference.config"));
        assert!(parse_inference_config("[1, 2]").is_err());
        assert!(parse_inference_config("vllm: [").is_err());
        assert_eq!(parse_inference_config(""), Ok(InferenceConfig::default()));
    }

    #[test]
    fn a_config_map_without_the_key_is_refused() {
        let data = BTreeMap::from([("other.yaml".to_owned(), String::new())]);
        let errs = parse_inference_config_map("params", Some(&data)).expect_err("no key");
        assert!(
            errs[0]
                .to_string()
                .contains("has no key inference_config.yaml")
        );
        let data = BTreeMap::from([(
            INFERENCE_CONFIG_KEY.to_owned(),
            "vllm: {max-num-seqs: 0}".to_owned(),
        )]);
        let errs = parse_inference_config_map("params", Some(&data)).expect_err("zero");
        assert!(
            errs[0]
                .to_string()
                .contains("ConfigMap \"params\": vllm.max-num-seqs")
        );
    }
}
