//! A model named by its Hugging Face id (`org/model`, optionally `@revision`) instead of a
//! catalog preset: the pure part. The webhook and `kubectl kaito models describe` fetch a
//! repository's `config.json` and file list at one commit; this module turns them into the
//! [`ModelFacts`] a Workspace records, and the facts into the same [`Preset`] the catalog
//! holds, so a hub model is sized exactly like a preset.
//!
//! - weights: the sum of the repository's `*.safetensors` files (the runtime serves
//!   safetensors weights; a repository with only `.bin`, `.pt` or GGUF files is refused);
//! - context length: `max_position_embeddings` (or `n_positions`, `max_sequence_length`,
//!   `seq_length`);
//! - KV bytes per token, as the catalog counts them: 2 (K and V) × `num_hidden_layers` ×
//!   `num_key_value_heads` (default `num_attention_heads`) × `head_dim` (default
//!   `hidden_size / num_attention_heads`) × 2 bytes (16-bit). A multimodal config's
//!   `text_config` is read when the top level has no layer count;
//! - serving memory: the weights as [`crate::sizing`] loads them (× [`WEIGHTS_OVERHEAD`],
//!   × [`HEADROOM`]) plus the runtime's reserve ([`RUNTIME_RESERVE_GIB`]), rounded up to a
//!   whole GiB: the least a node can have for the weights alone, as a catalog entry's
//!   `serve.gpuMemory` is; sizing then adds the KV cache of the context per node shape;
//! - disk: twice the weights plus 50 GiB (OS, images, the runtime), rounded up to 10 GiB;
//! - no fine-tuning (tuning needs a catalog preset), and `downloadNeedsToken` when the
//!   repository is gated.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::memory::Memory;
use crate::models::{HuggingFaceSource, Preset, ServeRequirement};
use crate::sizing::{HEADROOM, RUNTIME_RESERVE_GIB, WEIGHTS_OVERHEAD};

/// The field a Hugging Face id is written in.
pub const FIELD: &str = "inference.preset.name";
/// Longest `config.json` read (real ones are a few KiB; multimodal ones tens of KiB).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
/// Longest model-info answer read (a repository listing thousands of files).
pub const MAX_INFO_BYTES: usize = 8 << 20;

const GIB: u64 = 1 << 30;

/// `org/model[@revision]`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubId {
    /// `org/model`.
    pub repo: String,
    /// The branch, tag or commit after `@`; `None`: `main`.
    pub revision: Option<String>,
}

/// Why a preset name is not a usable Hugging Face id. Each message shows the form to write
/// (admission reports it under [`FIELD`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HubIdError {
    /// Not `org/model`.
    #[error(
        "{0:?} is not a Hugging Face id; write `org/model` or `org/model@revision` \
         (e.g. `Qwen/Qwen3-8B@main`), or a catalog preset name"
    )]
    Shape(String),
    /// A character the hub does not allow in ids or revisions.
    #[error(
        "{name:?} contains {bad:?}; Hugging Face ids and revisions use letters, digits, \
         '-', '_' and '.': write `org/model` or `org/model@revision`"
    )]
    Character {
        /// The whole name.
        name: String,
        /// The first character refused.
        bad: char,
    },
}

/// Whether a preset name is meant as a Hugging Face id (catalog names never hold a `/`).
pub fn is_hub_id(name: &str) -> bool {
    name.contains('/')
}

fn id_part_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 96
        && !s.starts_with(['.', '-'])
        && !s.ends_with('.')
        && !s.contains("..")
}

impl HubId {
    /// Parses `org/model` or `org/model@revision`.
    pub fn parse(name: &str) -> Result<HubId, HubIdError> {
        let shape = || HubIdError::Shape(name.to_string());
        let (repo, revision) = match name.split_once('@') {
            Some((repo, rev)) => (repo, Some(rev)),
            None => (name, None),
        };
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if let Some(bad) = repo
            .chars()
            .chain(revision.unwrap_or("").chars())
            .find(|c| !allowed(*c) && *c != '/')
        {
            return Err(HubIdError::Character {
                name: name.to_string(),
                bad,
            });
        }
        let mut parts = repo.split('/');
        let (Some(org), Some(model), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(shape());
        };
        if !id_part_ok(org) || !id_part_ok(model) {
            return Err(shape());
        }
        let revision = match revision {
            None => None,
            Some(rev) if id_part_ok(rev) && !rev.contains('/') => Some(rev.to_string()),
            Some(_) => return Err(shape()),
        };
        Ok(HubId {
            repo: repo.to_string(),
            revision,
        })
    }

    /// The revision to resolve: the one given, else `main`.
    pub fn revision_or_main(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }
}

/// Whether `s` is a full commit id (40 hex digits), as a pinned revision must be.
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One file of a repository, as the hub lists it (`siblings[]` with `?blobs=true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoFile {
    /// Path in the repository.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// What the webhook reads from the hub and records on the Workspace
/// (`kaito.sh/model-facts`): enough to size and serve the model without the hub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelFacts {
    /// `org/model`.
    pub repo: String,
    /// The commit the revision resolved to (40 hex digits).
    pub revision: String,
    /// `architectures[0]` of `config.json`.
    pub architecture: String,
    /// Total size of the `*.safetensors` files, in bytes.
    pub weights_bytes: u64,
    /// The model's longest context, in tokens.
    pub context_length: u32,
    /// KV-cache bytes per token at 16-bit precision.
    pub kv_bytes_per_token: u64,
    /// The repository is gated: downloading it needs a token.
    #[serde(default)]
    pub gated: bool,
}

/// Why a repository's `config.json` and files do not make a servable model. Each message says
/// which file or key, and what would do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HubModelError {
    /// `config.json` is not a JSON object.
    #[error("{repo}: config.json is not a JSON object ({why})")]
    ConfigNotJson {
        /// The repository.
        repo: String,
        /// The parser's message.
        why: String,
    },
    /// A key sizing needs is missing or not a positive number.
    #[error(
        "{repo}: config.json has no usable {key} (a positive number), which sizing needs; \
         this model cannot be sized from its config — use a catalog preset"
    )]
    MissingKey {
        /// The repository.
        repo: String,
        /// The key (or its alternatives).
        key: &'static str,
    },
    /// No `architectures` list.
    #[error(
        "{repo}: config.json has no \"architectures\" list, so the runtime cannot pick a loader"
    )]
    NoArchitecture {
        /// The repository.
        repo: String,
    },
    /// No safetensors weights.
    #[error(
        "{repo}: the repository has no .safetensors weights (files: {files}); the runtime \
         serves safetensors repositories by id — a GGUF file is served through a catalog \
         preset with huggingface.file"
    )]
    NoWeights {
        /// The repository.
        repo: String,
        /// Some of its files.
        files: String,
    },
    /// The revision is not a commit.
    #[error("{repo}: the hub answered revision {revision:?}, which is not a 40-digit commit id")]
    NotACommit {
        /// The repository.
        repo: String,
        /// What the hub said.
        revision: String,
    },
}

/// The positive integer at `key` of `obj`.
fn positive(obj: &Value, key: &str) -> Option<u64> {
    obj.get(key).and_then(Value::as_u64).filter(|n| *n > 0)
}

fn first_positive(obj: &Value, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|k| positive(obj, k))
}

/// Reads the facts of a repository at commit `revision` from its `config.json` text and its
/// file list. Pure; the caller fetched both from the hub.
pub fn facts_from_config(
    repo: &str,
    revision: &str,
    config_json: &str,
    files: &[RepoFile],
    gated: bool,
) -> Result<ModelFacts, HubModelError> {
    if !is_commit(revision) {
        return Err(HubModelError::NotACommit {
            repo: repo.to_string(),
            revision: revision.to_string(),
        });
    }
    let config: Value =
        serde_json::from_str(config_json).map_err(|e| HubModelError::ConfigNotJson {
            repo: repo.to_string(),
            why: e.to_string(),
        })?;
    if !config.is_object() {
        return Err(HubModelError::ConfigNotJson {
            repo: repo.to_string(),
            why: "not an object".to_string(),
        });
    }
    let architecture = config
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| HubModelError::NoArchitecture {
            repo: repo.to_string(),
        })?
        .to_string();
    // Multimodal configs keep the language model's shape under `text_config`.
    let text = match config.get("text_config") {
        Some(t) if t.is_object() && first_positive(&config, LAYERS).is_none() => t,
        _ => &config,
    };
    let missing = |key: &'static str| HubModelError::MissingKey {
        repo: repo.to_string(),
        key,
    };
    let layers = first_positive(text, LAYERS).ok_or_else(|| missing("num_hidden_layers"))?;
    let heads = first_positive(text, &["num_attention_heads", "n_head"])
        .ok_or_else(|| missing("num_attention_heads"))?;
    let kv_heads = positive(text, "num_key_value_heads").unwrap_or(heads);
    let head_dim = match positive(text, "head_dim") {
        Some(d) => d,
        None => {
            first_positive(text, &["hidden_size", "n_embd", "d_model"])
                .ok_or_else(|| missing("head_dim or hidden_size"))?
                / heads
        }
    };
    if head_dim == 0 {
        return Err(missing("head_dim"));
    }
    let context = first_positive(text, CONTEXT)
        .or_else(|| first_positive(&config, CONTEXT))
        .ok_or_else(|| missing("max_position_embeddings"))?;
    let weights_bytes: u64 = files
        .iter()
        .filter(|f| f.name.ends_with(".safetensors"))
        .map(|f| f.size)
        .sum();
    if weights_bytes == 0 {
        let mut names: Vec<&str> = files.iter().map(|f| f.name.as_str()).take(8).collect();
        if files.len() > 8 {
            names.push("...");
        }
        return Err(HubModelError::NoWeights {
            repo: repo.to_string(),
            files: names.join(", "),
        });
    }
    Ok(ModelFacts {
        repo: repo.to_string(),
        revision: revision.to_ascii_lowercase(),
        architecture,
        weights_bytes,
        context_length: u32::try_from(context).unwrap_or(u32::MAX),
        kv_bytes_per_token: 2u64
            .saturating_mul(layers)
            .saturating_mul(kv_heads)
            .saturating_mul(head_dim)
            .saturating_mul(2),
        gated,
    })
}

const LAYERS: &[&str] = &["num_hidden_layers", "n_layer", "num_layers"];
const CONTEXT: &[&str] = &[
    "max_position_embeddings",
    "n_positions",
    "max_sequence_length",
    "seq_length",
];

/// Why recorded facts (the `kaito.sh/model-facts` annotation) are not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FactsError(pub String);

impl ModelFacts {
    /// Reads recorded facts (JSON) and checks them.
    pub fn from_json(text: &str) -> Result<ModelFacts, FactsError> {
        let facts: ModelFacts =
            serde_json::from_str(text).map_err(|e| FactsError(format!("not valid facts: {e}")))?;
        if !is_commit(&facts.revision) {
            return Err(FactsError("revision is not a 40-digit commit id".into()));
        }
        if facts.weights_bytes == 0 || facts.context_length == 0 || facts.kv_bytes_per_token == 0 {
            return Err(FactsError(
                "weightsBytes, contextLength and kvBytesPerToken must be above 0".into(),
            ));
        }
        if facts.architecture.is_empty() {
            return Err(FactsError("architecture is empty".into()));
        }
        Ok(facts)
    }

    /// The facts as the JSON the Workspace records.
    pub fn to_json(&self) -> String {
        // A struct of strings, integers and a bool always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The preset these facts make, named `name` (the id the user wrote), sized by the rules
    /// in this module's documentation. `runtime_architectures` are those the serving runtime
    /// loads (the catalog's list).
    pub fn preset(&self, name: &str, runtime_architectures: &[String]) -> Preset {
        let weights = Memory::bytes(self.weights_bytes);
        let serve_gib = weights.as_gib() * WEIGHTS_OVERHEAD * HEADROOM + RUNTIME_RESERVE_GIB;
        let serve = Memory::gib(serve_gib.ceil().max(1.0) as u64);
        let disk = self
            .weights_bytes
            .saturating_mul(2)
            .saturating_add(50 * GIB)
            .div_ceil(10 * GIB)
            .saturating_mul(10);
        Preset {
            name: name.to_string(),
            huggingface: HuggingFaceSource {
                repo: self.repo.clone(),
                revision: self.revision.clone(),
                file: None,
            },
            architecture: self.architecture.clone(),
            weights,
            serve: ServeRequirement {
                gpu_memory: serve,
                per_gpu_memory: Memory::bytes(0),
                min_gpus: 1,
            },
            context_length: self.context_length,
            kv_bytes_per_token: self.kv_bytes_per_token,
            disk: Memory::gib(disk),
            tuning: None,
            download_needs_token: self.gated,
            deprecated: None,
            runtime_supported: runtime_architectures.contains(&self.architecture),
        }
    }
}

/// The hub's model-info call for `repo` at `revision`, relative to `HF_ENDPOINT`: the commit
/// the revision resolves to, whether the repository is gated, and every file with its size
/// (`blobs=true`).
pub fn revision_info_path(repo: &str, revision: &str) -> String {
    format!("api/models/{repo}/revision/{revision}?blobs=true")
}

/// The download path of `file` of `repo` at `commit`, relative to `HF_ENDPOINT`.
pub fn resolve_path(repo: &str, commit: &str, file: &str) -> String {
    format!("{repo}/resolve/{commit}/{file}")
}

/// What the model-info call says about one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionInfo {
    /// The commit (40 hex digits).
    pub sha: String,
    /// Every file with its size.
    pub files: Vec<RepoFile>,
    /// `gated` is set (`"auto"` or `"manual"`), or the repository is private.
    pub gated: bool,
}

/// Reads the model-info answer of `repo`.
pub fn parse_revision_info(repo: &str, body: &[u8]) -> Result<RevisionInfo, ResolveError> {
    #[derive(Deserialize)]
    struct Lfs {
        size: Option<u64>,
    }
    #[derive(Deserialize)]
    struct Sibling {
        rfilename: String,
        #[serde(default)]
        size: Option<u64>,
        #[serde(default)]
        lfs: Option<Lfs>,
    }
    #[derive(Deserialize)]
    struct Info {
        sha: String,
        #[serde(default)]
        siblings: Vec<Sibling>,
        #[serde(default)]
        gated: Value,
        #[serde(default)]
        private: bool,
    }
    let info: Info = serde_json::from_slice(body).map_err(|e| ResolveError::Protocol {
        repo: repo.to_string(),
        problem: format!("the model-info answer is not what the hub sends: {e}"),
    })?;
    if !is_commit(&info.sha) {
        return Err(ResolveError::Model(HubModelError::NotACommit {
            repo: repo.to_string(),
            revision: info.sha,
        }));
    }
    let mut files = Vec::with_capacity(info.siblings.len());
    for s in info.siblings {
        let size = s.size.or(s.lfs.and_then(|l| l.size));
        match size {
            Some(size) => files.push(RepoFile {
                name: s.rfilename,
                size,
            }),
            None if s.rfilename.ends_with(".safetensors") => {
                return Err(ResolveError::Protocol {
                    repo: repo.to_string(),
                    problem: format!(
                        "the hub listed {} without its size (blobs=true), so the model cannot \
                         be sized",
                        s.rfilename
                    ),
                });
            }
            None => {}
        }
    }
    let gated = info.private
        || match info.gated {
            Value::Bool(b) => b,
            Value::String(s) => !s.is_empty() && s != "false",
            _ => false,
        };
    Ok(RevisionInfo {
        sha: info.sha.to_ascii_lowercase(),
        files,
        gated,
    })
}

/// Why a Hugging Face id could not be resolved. [`ResolveError::retryable`] says whether the
/// same request may succeed later (the hub did not answer, or answered a server error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The hub did not answer within the deadline.
    #[error(
        "the Hugging Face hub ({endpoint}) did not answer within {secs} s while resolving \
         {repo}; try again (the hub may be slow or unreachable from the cluster)"
    )]
    Timeout {
        /// `HF_ENDPOINT`.
        endpoint: String,
        /// The repository.
        repo: String,
        /// The deadline.
        secs: u64,
    },
    /// No connection, or it broke.
    #[error(
        "the Hugging Face hub ({endpoint}) could not be reached while resolving {repo} \
         ({problem}); try again"
    )]
    Unreachable {
        /// `HF_ENDPOINT`.
        endpoint: String,
        /// The repository.
        repo: String,
        /// The transport error.
        problem: String,
    },
    /// A server error or rate limit.
    #[error("the Hugging Face hub answered HTTP {status} for {url}; try again")]
    Busy {
        /// The status.
        status: u16,
        /// What was asked.
        url: String,
    },
    /// No such repository or revision.
    #[error(
        "{repo}@{revision} is not on the Hugging Face hub ({url} answered 404): check the id \
         and the revision"
    )]
    NotFound {
        /// The repository.
        repo: String,
        /// The revision asked.
        revision: String,
        /// What was asked.
        url: String,
    },
    /// Gated or private, and no token was sent.
    #[error(
        "{repo} is gated or private on the Hugging Face hub (HTTP {status} without a token): \
         give a token with access — for a Workspace, name a Secret with key HF_TOKEN in \
         inference.preset.presetOptions.modelAccessSecret"
    )]
    NeedsToken {
        /// The repository.
        repo: String,
        /// 401 or 403.
        status: u16,
    },
    /// The token was refused.
    #[error(
        "the Hugging Face hub refused the token for {repo} (HTTP {status}): the token has no \
         access to it (accept the model's license on the hub with that account)"
    )]
    TokenRefused {
        /// The repository.
        repo: String,
        /// 401 or 403.
        status: u16,
    },
    /// Another unexpected answer.
    #[error("the Hugging Face hub's answer for {repo} is not usable: {problem}")]
    Protocol {
        /// The repository.
        repo: String,
        /// What was wrong.
        problem: String,
    },
    /// The repository is there but is not a model the runtime can size.
    #[error("{0}")]
    Model(#[from] HubModelError),
}

impl ResolveError {
    /// Whether the same request may succeed later.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. } | Self::Unreachable { .. } | Self::Busy { .. }
        )
    }

    /// The error for an answer with a status other than 200 (`token_sent`: the request carried
    /// a token).
    pub fn from_status(
        status: u16,
        repo: &str,
        revision: &str,
        url: &str,
        token_sent: bool,
    ) -> ResolveError {
        match status {
            401 | 403 if token_sent => Self::TokenRefused {
                repo: repo.to_string(),
                status,
            },
            401 | 403 => Self::NeedsToken {
                repo: repo.to_string(),
                status,
            },
            404 => Self::NotFound {
                repo: repo.to_string(),
                revision: revision.to_string(),
                url: url.to_string(),
            },
            408 | 429 | 500..=599 => Self::Busy {
                status,
                url: url.to_string(),
            },
            _ => Self::Protocol {
                repo: repo.to_string(),
                problem: format!("{url} answered HTTP {status}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PresetCatalog;
    use crate::sizing::{self, Mode, RuntimeParams};

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    /// Llama-3.1-8B's shape (the catalog's `llama-3.1-8b-instruct`).
    const LLAMA_8B: &str = r#"{
        "architectures": ["LlamaForCausalLM"], "hidden_size": 4096,
        "num_attention_heads": 32, "num_key_value_heads": 8, "num_hidden_layers": 32,
        "max_position_embeddings": 131072, "torch_dtype": "bfloat16"}"#;

    fn files(list: &[(&str, u64)]) -> Vec<RepoFile> {
        list.iter()
            .map(|(n, s)| RepoFile {
                name: n.to_string(),
                size: *s,
            })
            .collect()
    }

    #[test]
    fn ids_parse_with_and_without_revision() {
        assert_eq!(
            HubId::parse("Qwen/Qwen3-8B"),
            Ok(HubId {
                repo: "Qwen/Qwen3-8B".into(),
                revision: None
            })
        );
        let pinned = HubId::parse("org/m_1.5@v1.0").expect("parses");
        assert_eq!(pinned.repo, "org/m_1.5");
        assert_eq!(pinned.revision_or_main(), "v1.0");
        assert_eq!(
            HubId::parse("org/m").expect("id").revision_or_main(),
            "main"
        );
        assert!(is_hub_id("org/m") && !is_hub_id("phi-4"));
    }

    #[test]
    fn bad_ids_show_the_form_to_write() {
        for bad in [
            "org/",
            "/m",
            "a/b/c",
            "org/m@",
            "org/m@a/b",
            "org/../m",
            "org/m@x@y",
        ] {
            let err = HubId::parse(bad).expect_err(bad).to_string();
            assert!(
                err.contains(bad) && err.contains("org/model"),
                "{bad}: {err}"
            );
        }
        let err = HubId::parse("org/m?x=1").expect_err("query").to_string();
        assert!(err.contains("'?'"), "{err}");
    }

    #[test]
    fn llama_facts_match_the_catalog_entry() {
        let shards = files(&[
            ("config.json", 855),
            ("model-00001-of-00004.safetensors", 4_976_698_672),
            ("model-00002-of-00004.safetensors", 4_999_802_720),
            ("model-00003-of-00004.safetensors", 4_915_916_176),
            ("model-00004-of-00004.safetensors", 1_168_138_808),
            ("original/consolidated.00.pth", 16_060_617_592),
        ]);
        let facts =
            facts_from_config("meta-llama/x", COMMIT, LLAMA_8B, &shards, true).expect("facts");
        assert_eq!(facts.architecture, "LlamaForCausalLM");
        assert_eq!(facts.context_length, 131_072);
        let catalog = PresetCatalog::builtin();
        let entry = catalog.get("llama-3.1-8b-instruct").expect("preset");
        // Same KV rule as the catalog: 2 x 32 x 8 x 128 x 2.
        assert_eq!(facts.kv_bytes_per_token, entry.kv_bytes_per_token);
        // Only the safetensors count (not the .pth copy): 14.96 GiB as the catalog says.
        assert_eq!(facts.weights_bytes, 16_060_556_376);
        assert!(
            (Memory::bytes(facts.weights_bytes).as_gib() - entry.weights.as_gib()).abs() < 0.01
        );
        let preset = facts.preset("meta-llama/x", catalog.runtime_architectures());
        assert!(preset.runtime_supported && preset.download_needs_token);
        assert!(preset.tuning.is_none());
        // 14.96 x 1.02 x 1.05 + 2.3 = 18.3 -> 19 GiB; at least the weights, as the catalog
        // requires of every entry.
        assert_eq!(preset.serve.gpu_memory, Memory::gib(19));
        assert!(preset.serve.gpu_memory >= preset.weights);
        // 2 x 14.96 + 50 = 79.9 -> 80 GiB.
        assert_eq!(preset.disk, Memory::gib(80));
    }

    #[test]
    fn a_hub_model_is_sized_like_the_preset() {
        let catalog = PresetCatalog::builtin();
        let entry = catalog.get("llama-3.1-8b-instruct").expect("preset");
        let facts = facts_from_config(
            "meta-llama/x",
            COMMIT,
            LLAMA_8B,
            &files(&[("model.safetensors", entry.weights.as_bytes())]),
            false,
        )
        .expect("facts");
        let preset = facts.preset("meta-llama/x", catalog.runtime_architectures());
        let skus = crate::SkuCatalog::builtin();
        let ours = sizing::smallest_fitting_sku(
            &preset,
            Mode::Serve,
            RuntimeParams::default(),
            skus,
            crate::Cloud::Azure,
        )
        .map(|(s, p)| (s.name.clone(), p.max_model_len));
        let theirs = sizing::smallest_fitting_sku(
            entry,
            Mode::Serve,
            RuntimeParams::default(),
            skus,
            crate::Cloud::Azure,
        )
        .map(|(s, p)| (s.name.clone(), p.max_model_len));
        assert!(ours.is_some());
        assert_eq!(ours, theirs);
    }

    #[test]
    fn head_dim_and_multimodal_text_config_are_read() {
        // Qwen3-style explicit head_dim (128 while hidden/heads = 80).
        let qwen3 = r#"{"architectures": ["Qwen3ForCausalLM"], "hidden_size": 2560,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "num_hidden_layers": 36, "max_position_embeddings": 40960}"#;
        let f = facts_from_config(
            "q/q",
            COMMIT,
            qwen3,
            &files(&[("a.safetensors", 10)]),
            false,
        )
        .expect("facts");
        assert_eq!(f.kv_bytes_per_token, 2 * 36 * 8 * 128 * 2);
        // Gemma-3-style: the language model under text_config.
        let gemma3 = r#"{"architectures": ["Gemma3ForConditionalGeneration"],
            "text_config": {"hidden_size": 2560, "num_attention_heads": 8,
              "num_key_value_heads": 4, "head_dim": 256, "num_hidden_layers": 34,
              "max_position_embeddings": 131072}, "vision_config": {"num_hidden_layers": 27}}"#;
        let f = facts_from_config(
            "g/g",
            COMMIT,
            gemma3,
            &files(&[("a.safetensors", 10)]),
            false,
        )
        .expect("facts");
        assert_eq!(f.kv_bytes_per_token, 2 * 34 * 4 * 256 * 2);
        assert_eq!(f.context_length, 131_072);
        // No KV head count: every head has its own K and V.
        let mha = r#"{"architectures": ["X"], "hidden_size": 64, "num_attention_heads": 4,
            "num_hidden_layers": 2, "max_position_embeddings": 512}"#;
        let f = facts_from_config("x/x", COMMIT, mha, &files(&[("a.safetensors", 10)]), false)
            .expect("facts");
        assert_eq!(f.kv_bytes_per_token, 2 * 2 * 4 * 16 * 2);
    }

    #[test]
    fn unusable_repositories_say_why() {
        let weights = files(&[("model.safetensors", 100)]);
        let err = |cfg: &str, f: &[RepoFile]| {
            facts_from_config("o/m", COMMIT, cfg, f, false)
                .expect_err("must fail")
                .to_string()
        };
        assert!(err("not json", &weights).contains("not a JSON object"));
        assert!(err("[1]", &weights).contains("not a JSON object"));
        assert!(err(r#"{"hidden_size": 1}"#, &weights).contains("\"architectures\""));
        let no_ctx = LLAMA_8B.replace("\"max_position_embeddings\": 131072,", "");
        assert!(err(&no_ctx, &weights).contains("max_position_embeddings"));
        let no_layers = LLAMA_8B.replace("\"num_hidden_layers\": 32,", "");
        assert!(err(&no_layers, &weights).contains("num_hidden_layers"));
        let gguf = files(&[("config.json", 1), ("m.Q4_K_M.gguf", 100)]);
        let e = err(LLAMA_8B, &gguf);
        assert!(
            e.contains("no .safetensors") && e.contains("m.Q4_K_M.gguf"),
            "{e}"
        );
        let e = facts_from_config("o/m", "main", LLAMA_8B, &weights, false)
            .expect_err("not a commit")
            .to_string();
        assert!(e.contains("commit"), "{e}");
    }

    #[test]
    fn facts_round_trip_and_bad_records_are_refused() {
        let facts = facts_from_config(
            "o/m",
            COMMIT,
            LLAMA_8B,
            &files(&[("model.safetensors", 100)]),
            false,
        )
        .expect("facts");
        assert_eq!(ModelFacts::from_json(&facts.to_json()), Ok(facts.clone()));
        let forged = facts.to_json().replace(COMMIT, "main");
        assert!(ModelFacts::from_json(&forged).is_err());
        let zero = facts
            .to_json()
            .replace("\"weightsBytes\":100", "\"weightsBytes\":0");
        assert!(ModelFacts::from_json(&zero).is_err());
        assert!(ModelFacts::from_json("{}").is_err());
        let unsupported = ModelFacts {
            architecture: "FalconForCausalLM".into(),
            ..facts
        }
        .preset("o/m", PresetCatalog::builtin().runtime_architectures());
        assert!(!unsupported.runtime_supported);
    }

    #[test]
    fn model_info_gives_commit_sizes_and_gating() {
        let body = br#"{"id": "o/m", "sha": "0123456789ABCDEF0123456789abcdef01234567",
            "gated": "manual", "siblings": [
              {"rfilename": "config.json", "size": 700},
              {"rfilename": "model.safetensors", "size": 5, "lfs": {"size": 5, "sha256": "x"}},
              {"rfilename": "b.safetensors", "lfs": {"size": 7}}]}"#;
        let info = parse_revision_info("o/m", body).expect("parses");
        assert_eq!(info.sha, COMMIT);
        assert!(info.gated);
        assert_eq!(info.files.iter().map(|f| f.size).sum::<u64>(), 712);
        let public = br#"{"sha": "0123456789abcdef0123456789abcdef01234567", "gated": false,
            "siblings": []}"#;
        assert!(!parse_revision_info("o/m", public).expect("parses").gated);
        let no_sizes = br#"{"sha": "0123456789abcdef0123456789abcdef01234567",
            "siblings": [{"rfilename": "model.safetensors"}]}"#;
        let err = parse_revision_info("o/m", no_sizes)
            .expect_err("no size")
            .to_string();
        assert!(err.contains("without its size"), "{err}");
        assert!(parse_revision_info("o/m", b"<html>").is_err());
        assert_eq!(
            revision_info_path("o/m", "main"),
            "api/models/o/m/revision/main?blobs=true"
        );
    }

    #[test]
    fn statuses_become_errors_that_say_what_to_do() {
        let e = |status, token| ResolveError::from_status(status, "o/m", "main", "u", token);
        assert!(e(401, false).to_string().contains("modelAccessSecret"));
        assert!(matches!(e(403, true), ResolveError::TokenRefused { .. }));
        assert!(matches!(e(404, false), ResolveError::NotFound { .. }));
        assert!(e(503, false).retryable() && e(429, false).retryable());
        assert!(!e(404, false).retryable() && !e(401, false).retryable());
        let timeout = ResolveError::Timeout {
            endpoint: "http://hub".into(),
            repo: "o/m".into(),
            secs: 5,
        };
        assert!(timeout.retryable() && timeout.to_string().contains("try again"));
    }
}
