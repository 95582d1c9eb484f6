//! The user's tuning configuration (`tuning.config`): the `training_config.yaml` of a ConfigMap,
//! checked with upstream KAITO's rules before the workspace is admitted.
//!
//! - the text parses as YAML and has the top-level key `training_config`, a mapping whose keys
//!   are sections the trainer reads ([`TRAINING_CONFIG_SECTIONS`]); other sections are refused;
//! - `QuantizationConfig.load_in_4bit` and `load_in_8bit` are booleans, never both true;
//! - method `qlora` needs `load_in_4bit: true` and refuses `load_in_8bit: true`;
//! - method `lora` trains without quantization: neither may be true;
//! - `TrainingArguments.output_dir`, when given, is [`RESULTS_DIR`]: the Job mounts the results
//!   volume there and publishes from it (upstream KAITO moves the volume to any `/mnt/...` path;
//!   here a different path would train into the container's own filesystem and publish nothing,
//!   so it is refused at admission instead).
//!
//! Every error is on the field `tuning.config` and names the path inside the YAML and the fix,
//! never a value or a line of the text (the ConfigMap is read with the webhook's rights and the
//! message goes to whoever sent the Workspace): a wrong value is described by its type, a YAML
//! syntax error by its line and column. Nothing here does I/O: the webhook fetches the
//! ConfigMap and hands its data in.

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::FieldError;

/// The ConfigMap key holding the training configuration.
pub const TRAINING_CONFIG_KEY: &str = "training_config.yaml";
/// The top-level key of `training_config.yaml`.
pub const TRAINING_CONFIG_ROOT: &str = "training_config";
/// The sections of `training_config` the trainer reads.
pub const TRAINING_CONFIG_SECTIONS: [&str; 6] = [
    "ModelConfig",
    "QuantizationConfig",
    "LoraConfig",
    "TrainingArguments",
    "DatasetConfig",
    "DataCollator",
];

const FIELD: &str = "tuning.config";
/// Where the tuning Job mounts the results volume (the trainer's `output_dir`).
pub const RESULTS_DIR: &str = "/mnt/results";
/// Where the tuning Job mounts the training data volume (the trainer's dataset folder).
pub const DATA_DIR: &str = "/mnt/data";

/// Checks the text of a `training_config.yaml` for tuning `method` (`lora` or `qlora`; for any
/// other method only the structure is checked, `validate` reports the method itself).
///
/// Errors are on `tuning.config`; each message starts with the path inside the YAML.
pub fn validate_training_config(method: &str, yaml_text: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut error = |message: String| errors.push(FieldError::new(FIELD, message));
    let doc: Value = match serde_yaml::from_str(yaml_text) {
        Ok(doc) => doc,
        Err(err) => {
            error(format!(
                "{TRAINING_CONFIG_KEY} is not valid YAML ({}): fix the syntax",
                yaml_error_location(&err)
            ));
            return errors;
        }
    };
    let Some(root) = doc.as_mapping().and_then(|m| m.get(TRAINING_CONFIG_ROOT)) else {
        error(format!(
            "{TRAINING_CONFIG_KEY} has no top-level key {TRAINING_CONFIG_ROOT}: put the sections \
             ({}) under `{TRAINING_CONFIG_ROOT}:`",
            TRAINING_CONFIG_SECTIONS.join(", ")
        ));
        return errors;
    };
    let Some(sections) = root.as_mapping() else {
        error(format!(
            "{TRAINING_CONFIG_ROOT} is not a mapping of sections: give it sections such as \
             ModelConfig and TrainingArguments"
        ));
        return errors;
    };

    for (key, value) in sections {
        let Some(name) = key.as_str() else {
            error(format!(
                "{TRAINING_CONFIG_ROOT} has a key that is not a string ({}): use the section \
                 names {}",
                yaml_kind(key),
                TRAINING_CONFIG_SECTIONS.join(", ")
            ));
            continue;
        };
        if !TRAINING_CONFIG_SECTIONS.contains(&name) {
            let hint = TRAINING_CONFIG_SECTIONS
                .iter()
                .find(|s| s.eq_ignore_ascii_case(name))
                .map(|s| format!("did you mean {s}? "))
                .unwrap_or_default();
            error(format!(
                "{TRAINING_CONFIG_ROOT}.{name} is not a section KAITO reads: {hint}use only {}",
                TRAINING_CONFIG_SECTIONS.join(", ")
            ));
            continue;
        }
        if !(value.is_mapping() || value.is_null()) {
            error(format!(
                "{TRAINING_CONFIG_ROOT}.{name} must be a mapping of settings, not {}",
                yaml_kind(value)
            ));
        }
    }

    if let Some(dir) = sections
        .get("TrainingArguments")
        .and_then(Value::as_mapping)
        .and_then(|t| t.get("output_dir"))
    {
        let ok = dir
            .as_str()
            .is_some_and(|d| d.trim_end_matches('/') == RESULTS_DIR);
        if !ok && !dir.is_null() {
            error(format!(
                "{TRAINING_CONFIG_ROOT}.TrainingArguments.output_dir is not {RESULTS_DIR}, but \
                 the tuning Job collects the adapter from there: set output_dir: \"{RESULTS_DIR}\" \
                 or remove it"
            ));
        }
    }

    let quant = sections
        .get("QuantizationConfig")
        .and_then(Value::as_mapping);
    let bit = |key: &str, errors: &mut Vec<FieldError>| -> bool {
        match quant.and_then(|q| q.get(key)) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                errors.push(FieldError::new(
                    FIELD,
                    format!(
                        "{TRAINING_CONFIG_ROOT}.QuantizationConfig.{key} must be true or false, \
                         not {}",
                        yaml_kind(other)
                    ),
                ));
                false
            }
        }
    };
    let four = bit("load_in_4bit", &mut errors);
    let eight = bit("load_in_8bit", &mut errors);
    let path = format!("{TRAINING_CONFIG_ROOT}.QuantizationConfig");
    let mut error = |message: String| errors.push(FieldError::new(FIELD, message));
    if four && eight {
        error(format!(
            "{path}.load_in_4bit and {path}.load_in_8bit are both true: a model is loaded in one \
             precision; remove load_in_8bit (method qlora is 4-bit)"
        ));
    } else if method == "qlora" {
        if eight {
            error(format!(
                "{path}.load_in_8bit must not be true for method qlora (QLoRA trains on a 4-bit \
                 model): remove load_in_8bit and set load_in_4bit: true, or use method lora"
            ));
        } else if !four {
            error(format!(
                "{path}.load_in_4bit must be true for method qlora: set load_in_4bit: true under \
                 QuantizationConfig, or use method lora"
            ));
        }
    } else if method == "lora" {
        for (key, on) in [("load_in_4bit", four), ("load_in_8bit", eight)] {
            if on {
                error(format!(
                    "{path}.{key} must not be true for method lora (LoRA trains without \
                     quantization): remove it, or use method qlora"
                ));
            }
        }
    }
    errors
}

/// Checks the data of the ConfigMap `config_map` named by `tuning.config` (`None`: it has no
/// `data`): it must hold [`TRAINING_CONFIG_KEY`], which must pass
/// [`validate_training_config`]. Messages start with `ConfigMap "<name>"`.
pub fn validate_training_config_map(
    method: &str,
    config_map: &str,
    data: Option<&BTreeMap<String, String>>,
) -> Vec<FieldError> {
    let Some(text) = data.and_then(|d| d.get(TRAINING_CONFIG_KEY)) else {
        return vec![FieldError::new(
            FIELD,
            format!(
                "ConfigMap {config_map:?} has no key {TRAINING_CONFIG_KEY}: put the training \
                 configuration under data.{TRAINING_CONFIG_KEY}, or remove tuning.config to use \
                 the built-in one"
            ),
        )];
    };
    validate_training_config(method, text)
        .into_iter()
        .map(|e| FieldError::new(e.field, format!("ConfigMap {config_map:?} {}", e.message)))
        .collect()
}

/// What a YAML value is, for messages: its type, never its content.
pub(crate) fn yaml_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Where a YAML syntax error is, for messages: serde_yaml's own text can quote the input.
pub(crate) fn yaml_error_location(err: &serde_yaml::Error) -> String {
    match err.location() {
        Some(at) => format!("line {}, column {}", at.line(), at.column()),
        None => "position unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QLORA: &str = "training_config:\n  ModelConfig:\n    torch_dtype: \"bfloat16\"\n  \
                         QuantizationConfig:\n    load_in_4bit: true\n    \
                         bnb_4bit_quant_type: \"nf4\"\n  LoraConfig:\n    r: 8\n  \
                         TrainingArguments:\n    output_dir: \"/mnt/results\"\n  \
                         DataCollator:\n    mlm: true\n  DatasetConfig:\n    shuffle_dataset: true\n";
    const LORA: &str = "training_config:\n  ModelConfig:\n    torch_dtype: \"bfloat16\"\n  \
                        LoraConfig:\n    r: 8\n  TrainingArguments:\n    output_dir: \"/mnt/results\"\n";

    fn messages(errors: &[FieldError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    fn one_error(method: &str, yaml: &str) -> String {
        let errors = validate_training_config(method, yaml);
        assert_eq!(errors.len(), 1, "{:#?}", messages(&errors));
        assert_eq!(errors[0].field, "tuning.config");
        errors[0].message.clone()
    }

    #[test]
    fn the_templates_kaito_writes_are_accepted() {
        assert_eq!(validate_training_config("qlora", QLORA), vec![]);
        assert_eq!(validate_training_config("lora", LORA), vec![]);
        let explicit_off = LORA.replace(
            "  LoraConfig:",
            "  QuantizationConfig:\n    load_in_4bit: false\n    load_in_8bit: false\n  LoraConfig:",
        );
        assert_eq!(validate_training_config("lora", &explicit_off), vec![]);
    }

    #[test]
    fn output_dir_must_be_the_results_volume() {
        let elsewhere = LORA.replace("/mnt/results", "/mnt/output");
        let m = one_error("lora", &elsewhere);
        assert!(
            m.starts_with(
                "training_config.TrainingArguments.output_dir is not /mnt/results, but the tuning Job collects the adapter from there"
            ),
            "{m}"
        );
        assert!(
            m.contains("set output_dir: \"/mnt/results\" or remove it"),
            "{m}"
        );
        assert!(!m.contains("/mnt/output"), "the value is not echoed: {m}");
        let number = LORA.replace("\"/mnt/results\"", "3");
        assert!(one_error("lora", &number).contains("output_dir is not /mnt/results"));
        let slash = LORA.replace("/mnt/results", "/mnt/results/");
        assert_eq!(validate_training_config("lora", &slash), vec![]);
        let absent = LORA.replace(
            "    output_dir: \"/mnt/results\"\n",
            "    num_train_epochs: 1\n",
        );
        assert_eq!(validate_training_config("lora", &absent), vec![]);
    }

    #[test]
    fn qlora_needs_load_in_4bit_true() {
        let m = one_error("qlora", LORA);
        assert!(
            m.starts_with(
                "training_config.QuantizationConfig.load_in_4bit must be true for method qlora"
            ),
            "{m}"
        );
        assert!(m.contains("set load_in_4bit: true"), "{m}");
        let off = QLORA.replace("load_in_4bit: true", "load_in_4bit: false");
        assert!(one_error("qlora", &off).contains("load_in_4bit must be true"));
    }

    #[test]
    fn qlora_refuses_load_in_8bit() {
        let eight = QLORA.replace("load_in_4bit: true", "load_in_8bit: true");
        let m = one_error("qlora", &eight);
        assert!(
            m.starts_with(
                "training_config.QuantizationConfig.load_in_8bit must not be true for method qlora"
            ),
            "{m}"
        );
        assert!(m.contains("set load_in_4bit: true"), "{m}");
    }

    #[test]
    fn both_4bit_and_8bit_is_an_error_for_every_method() {
        let both = QLORA.replace(
            "load_in_4bit: true",
            "load_in_4bit: true\n    load_in_8bit: true",
        );
        for method in ["qlora", "lora", "other"] {
            let errors = validate_training_config(method, &both);
            assert!(
                errors.iter().any(|e| e.message.contains("load_in_4bit and")
                    && e.message.contains("load_in_8bit are both true")),
                "{method}: {:#?}",
                messages(&errors)
            );
        }
    }

    #[test]
    fn lora_refuses_quantization() {
        let m = one_error("lora", QLORA);
        assert!(
            m.starts_with(
                "training_config.QuantizationConfig.load_in_4bit must not be true for method lora"
            ),
            "{m}"
        );
        let eight = QLORA.replace("load_in_4bit: true", "load_in_8bit: true");
        assert!(
            one_error("lora", &eight).contains("load_in_8bit must not be true for method lora")
        );
    }

    #[test]
    fn quantization_flags_must_be_booleans() {
        let text = QLORA.replace("load_in_4bit: true", "load_in_4bit: \"true\"");
        let errors = validate_training_config("qlora", &text);
        assert!(
            errors.iter().any(|e| e
                .message
                .contains("load_in_4bit must be true or false, not a string")),
            "{:#?}",
            messages(&errors)
        );
    }

    #[test]
    fn unknown_section_is_refused() {
        let text = format!("{LORA}  Optimizer:\n    lr: 1\n");
        let m = one_error("lora", &text);
        assert!(
            m.starts_with("training_config.Optimizer is not a section KAITO reads"),
            "{m}"
        );
        assert!(
            m.contains("ModelConfig, QuantizationConfig, LoraConfig"),
            "{m}"
        );
        let typo = format!("{LORA}  datasetconfig:\n    shuffle_dataset: true\n");
        assert!(one_error("lora", &typo).contains("did you mean DatasetConfig?"));
    }

    #[test]
    fn section_that_is_not_a_mapping_is_refused() {
        let text = format!("{LORA}  DataCollator: [1, 2]\n");
        assert!(
            one_error("lora", &text).contains("training_config.DataCollator must be a mapping")
        );
    }

    #[test]
    fn text_that_is_not_yaml_is_refused() {
        let m = one_error("qlora", "training_config: [unclosed\n  : :");
        assert!(
            m.starts_with("training_config.yaml is not valid YAML"),
            "{m}"
        );
    }

    #[test]
    fn missing_training_config_key_is_refused() {
        for text in ["", "ModelConfig:\n  torch_dtype: bfloat16\n", "- a\n- b\n"] {
            let m = one_error("lora", text);
            assert!(
                m.starts_with("training_config.yaml has no top-level key training_config"),
                "{text:?}: {m}"
            );
        }
        assert!(one_error("lora", "training_config: 3\n").contains("is not a mapping"));
    }

    #[test]
    fn config_map_without_the_training_config_yaml_key_is_refused() {
        let other: BTreeMap<String, String> = [("config.yaml".to_owned(), LORA.to_owned())].into();
        for data in [None, Some(&other)] {
            let errors = validate_training_config_map("lora", "my-config", data);
            assert_eq!(errors.len(), 1, "{:#?}", messages(&errors));
            assert_eq!(
                errors[0].message.split(':').next(),
                Some("ConfigMap \"my-config\" has no key training_config.yaml")
            );
        }
    }

    #[test]
    fn config_map_errors_name_the_config_map_and_the_path() {
        let eight = QLORA.replace("load_in_4bit: true", "load_in_8bit: true");
        let data: BTreeMap<String, String> = [(TRAINING_CONFIG_KEY.to_owned(), eight)].into();
        let errors = validate_training_config_map("qlora", "x", Some(&data));
        assert_eq!(
            messages(&errors).first().and_then(|m| m.split(" (").next()),
            Some(
                "tuning.config: ConfigMap \"x\" training_config.QuantizationConfig.load_in_8bit \
                 must not be true for method qlora"
            )
        );
        let good: BTreeMap<String, String> =
            [(TRAINING_CONFIG_KEY.to_owned(), QLORA.to_owned())].into();
        assert_eq!(
            validate_training_config_map("qlora", "x", Some(&good)),
            vec![]
        );
    }
}
