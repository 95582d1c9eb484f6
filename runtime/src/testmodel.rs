//! Generator of tiny random-weight models in Hugging Face layout, for tests, demos and benchmarks.
//!
//! The output directory holds `config.json`, `generation_config.json`, `tokenizer.json` (byte-level
//! BPE: the 256 byte symbols plus special tokens, no merges), `tokenizer_config.json` with a chat
//! template, and `model.safetensors` (f32). Optionally a matching PEFT LoRA adapter is written to a
//! second directory. Everything is deterministic from the seed.
//!
//! The language-model head rows of special tokens and of non-printable bytes are zero, so greedy
//! decoding of the random model produces printable ASCII and never stops early on an EOS token:
//! a request always generates exactly `max_tokens` tokens, which makes tests exact.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde_json::{Value, json};

/// Errors from writing a test model.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file being written.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Serializing the safetensors file failed.
    #[error("serializing safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// The requested shape is inconsistent.
    #[error("invalid model shape: {0}")]
    Shape(String),
}

/// Model architecture to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// `LlamaForCausalLM` (separate q/k/v and gate/up projections).
    Llama,
    /// `Phi3ForCausalLM` (fused qkv and gate_up projections).
    Phi3,
}

/// Shape and seed of a generated model.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    /// Architecture.
    pub arch: Arch,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP intermediate size.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_layers: usize,
    /// Number of attention heads.
    pub num_heads: usize,
    /// Number of key/value heads (grouped-query attention when smaller than `num_heads`).
    pub num_kv_heads: usize,
    /// Maximum context length.
    pub max_position_embeddings: usize,
    /// Seed of the deterministic generator.
    pub seed: u64,
}

impl ModelSpec {
    /// The tiny variant used by tests: 2 layers, hidden size 64.
    pub fn tiny(arch: Arch, seed: u64) -> Self {
        Self {
            arch,
            hidden_size: 64,
            intermediate_size: 128,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            max_position_embeddings: 512,
            seed,
        }
    }

    /// The benchmark variant: about 100M parameters (hidden 768, 12 layers, intermediate 2560).
    pub fn bench(arch: Arch, seed: u64) -> Self {
        Self {
            arch,
            hidden_size: 768,
            intermediate_size: 2560,
            num_layers: 12,
            num_heads: 12,
            num_kv_heads: 4,
            max_position_embeddings: 2048,
            seed,
        }
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    fn validate(&self) -> Result<(), GenError> {
        if self.num_heads == 0
            || self.num_kv_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_heads)
            || !self.num_heads.is_multiple_of(self.num_kv_heads)
            || !self.head_dim().is_multiple_of(2)
        {
            return Err(GenError::Shape(format!(
                "hidden_size {} must split into {} heads of even size, divisible by {} kv heads",
                self.hidden_size, self.num_heads, self.num_kv_heads
            )));
        }
        Ok(())
    }

    /// Number of parameters the model will have.
    pub fn parameter_count(&self) -> usize {
        let h = self.hidden_size;
        let kv = self.num_kv_heads * self.head_dim();
        let per_layer = h * h * 2 + h * kv * 2 + 3 * h * self.intermediate_size + 2 * h;
        VOCAB_SIZE * h * 2 + self.num_layers * per_layer + h
    }
}

/// Special tokens, appended after the 256 byte symbols.
pub const SPECIAL_TOKENS: [&str; 6] = [
    "<s>",
    "</s>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
];
/// Vocabulary size: 256 byte symbols plus the special tokens.
pub const VOCAB_SIZE: usize = 256 + SPECIAL_TOKENS.len();
const BOS_ID: usize = 256;
const EOS_ID: usize = 257;
const END_ID: usize = 261;

/// The chat template (Phi-3 style) stored in `tokenizer_config.json`.
pub const CHAT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

/// Deterministic pseudo-random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-scale, scale).
    fn uniform(&mut self, scale: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (unit * 2.0 - 1.0) * scale
    }

    fn tensor(&mut self, rows: usize, cols: usize, scale: f32) -> Tensor {
        let data = (0..rows * cols).map(|_| self.uniform(scale)).collect();
        Tensor {
            shape: vec![rows, cols],
            data,
        }
    }
}

struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    fn ones(n: usize) -> Self {
        Self {
            shape: vec![n],
            data: vec![1.0; n],
        }
    }
}

/// GPT-2 byte-to-unicode mapping used by the ByteLevel pre-tokenizer and decoder.
fn byte_symbols() -> Vec<char> {
    let kept =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0u32;
    (0..256u32)
        .map(|b| {
            let code = if kept(b) {
                b
            } else {
                extra += 1;
                255 + extra
            };
            char::from_u32(code).unwrap_or('?')
        })
        .collect()
}

fn tokenizer_json() -> Value {
    let symbols = byte_symbols();
    let mut vocab = serde_json::Map::new();
    for (id, c) in symbols.iter().enumerate() {
        vocab.insert(c.to_string(), json!(id));
    }
    let mut added = Vec::new();
    for (i, tok) in SPECIAL_TOKENS.iter().enumerate() {
        vocab.insert((*tok).to_string(), json!(256 + i));
        added.push(json!({
            "id": 256 + i, "content": tok, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }));
    }
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": []
        }
    })
}

fn tokenizer_config() -> Value {
    let mut decoder = serde_json::Map::new();
    for (i, tok) in SPECIAL_TOKENS.iter().enumerate() {
        decoder.insert(
            (256 + i).to_string(),
            json!({"content": tok, "lstrip": false, "normalized": false, "rstrip": false,
                   "single_word": false, "special": true}),
        );
    }
    json!({
        "add_bos_token": false,
        "add_eos_token": false,
        "added_tokens_decoder": decoder,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "</s>",
        "unk_token": null,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 2048,
        "tokenizer_class": "PreTrainedTokenizerFast"
    })
}

fn config_json(spec: &ModelSpec) -> Value {
    let mut cfg = json!({
        "vocab_size": VOCAB_SIZE,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": spec.max_position_embeddings,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": null,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "tie_word_embeddings": false,
        "torch_dtype": "float32",
        "attention_bias": false,
        "mlp_bias": false,
        "initializer_range": 0.02,
        "use_cache": true
    });
    if let Value::Object(map) = &mut cfg {
        match spec.arch {
            Arch::Llama => {
                map.insert("architectures".into(), json!(["LlamaForCausalLM"]));
                map.insert("model_type".into(), json!("llama"));
                map.insert("head_dim".into(), json!(spec.head_dim()));
            }
            Arch::Phi3 => {
                map.insert("architectures".into(), json!(["Phi3ForCausalLM"]));
                map.insert("model_type".into(), json!("phi3"));
                map.insert(
                    "original_max_position_embeddings".into(),
                    json!(spec.max_position_embeddings),
                );
                map.insert("sliding_window".into(), Value::Null);
                map.insert("resid_pdrop".into(), json!(0.0));
                map.insert("embd_pdrop".into(), json!(0.0));
                map.insert("attention_dropout".into(), json!(0.0));
                map.insert("pad_token_id".into(), json!(EOS_ID));
            }
        }
    }
    cfg
}

/// Whether the language-model head may emit this token: printable ASCII and space only.
fn emittable(id: usize) -> bool {
    (32..=126).contains(&id)
}

fn model_tensors(spec: &ModelSpec) -> BTreeMap<String, Tensor> {
    let mut rng = Rng(spec.seed);
    let h = spec.hidden_size;
    let kv = spec.num_kv_heads * spec.head_dim();
    let inter = spec.intermediate_size;
    let scale_in = 1.0 / (h as f32).sqrt();
    let scale_inter = 1.0 / (inter as f32).sqrt();
    let mut t = BTreeMap::new();
    t.insert(
        "model.embed_tokens.weight".into(),
        rng.tensor(VOCAB_SIZE, h, 1.0),
    );
    for l in 0..spec.num_layers {
        let p = format!("model.layers.{l}");
        match spec.arch {
            Arch::Llama => {
                t.insert(
                    format!("{p}.self_attn.q_proj.weight"),
                    rng.tensor(h, h, scale_in),
                );
                t.insert(
                    format!("{p}.self_attn.k_proj.weight"),
                    rng.tensor(kv, h, scale_in),
                );
                t.insert(
                    format!("{p}.self_attn.v_proj.weight"),
                    rng.tensor(kv, h, scale_in),
                );
                t.insert(
                    format!("{p}.mlp.gate_proj.weight"),
                    rng.tensor(inter, h, scale_in),
                );
                t.insert(
                    format!("{p}.mlp.up_proj.weight"),
                    rng.tensor(inter, h, scale_in),
                );
            }
            Arch::Phi3 => {
                t.insert(
                    format!("{p}.self_attn.qkv_proj.weight"),
                    rng.tensor(h + 2 * kv, h, scale_in),
                );
                t.insert(
                    format!("{p}.mlp.gate_up_proj.weight"),
                    rng.tensor(2 * inter, h, scale_in),
                );
            }
        }
        t.insert(
            format!("{p}.self_attn.o_proj.weight"),
            rng.tensor(h, h, scale_in),
        );
        t.insert(
            format!("{p}.mlp.down_proj.weight"),
            rng.tensor(h, inter, scale_inter),
        );
        t.insert(format!("{p}.input_layernorm.weight"), Tensor::ones(h));
        t.insert(
            format!("{p}.post_attention_layernorm.weight"),
            Tensor::ones(h),
        );
    }
    t.insert("model.norm.weight".into(), Tensor::ones(h));
    let mut head = rng.tensor(VOCAB_SIZE, h, 1.0);
    for id in (0..VOCAB_SIZE).filter(|id| !emittable(*id)) {
        head.data[id * h..(id + 1) * h].fill(0.0);
    }
    t.insert("lm_head.weight".into(), head);
    t
}

/// LoRA target modules of the generated adapter, per architecture.
fn adapter_targets(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::Llama => &["q_proj", "v_proj", "o_proj", "down_proj"],
        Arch::Phi3 => &["qkv_proj", "o_proj", "down_proj"],
    }
}

fn adapter_tensors(spec: &ModelSpec, rank: usize, seed: u64) -> BTreeMap<String, Tensor> {
    let mut rng = Rng(seed ^ 0xADA9_7E55);
    let h = spec.hidden_size;
    let kv = spec.num_kv_heads * spec.head_dim();
    let inter = spec.intermediate_size;
    let mut t = BTreeMap::new();
    for l in 0..spec.num_layers {
        for target in adapter_targets(spec.arch) {
            let (module, out_dim, in_dim) = match *target {
                "q_proj" => ("self_attn.q_proj", h, h),
                "v_proj" => ("self_attn.v_proj", kv, h),
                "qkv_proj" => ("self_attn.qkv_proj", h + 2 * kv, h),
                "o_proj" => ("self_attn.o_proj", h, h),
                _ => ("mlp.down_proj", h, inter),
            };
            let p = format!("base_model.model.model.layers.{l}.{module}");
            t.insert(format!("{p}.lora_A.weight"), rng.tensor(rank, in_dim, 0.5));
            t.insert(format!("{p}.lora_B.weight"), rng.tensor(out_dim, rank, 0.5));
        }
    }
    t
}

fn write_safetensors(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<(), GenError> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let raw = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), t.shape.clone(), raw)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, raw)| {
            TensorView::new(Dtype::F32, shape.clone(), raw).map(|view| (name.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    safetensors::serialize_to_file(views, Some(metadata), path)?;
    Ok(())
}

fn write_json(path: &Path, value: &Value) -> Result<(), GenError> {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    fs::write(path, text).map_err(|source| GenError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn create_dir(dir: &Path) -> Result<(), GenError> {
    fs::create_dir_all(dir).map_err(|source| GenError::Io {
        path: dir.display().to_string(),
        source,
    })
}

/// Writes a random-weight model in Hugging Face layout into `dir`.
pub fn write_model(dir: &Path, spec: &ModelSpec) -> Result<(), GenError> {
    spec.validate()?;
    create_dir(dir)?;
    write_json(&dir.join("config.json"), &config_json(spec))?;
    write_json(
        &dir.join("generation_config.json"),
        &json!({"bos_token_id": BOS_ID, "eos_token_id": [EOS_ID, END_ID], "do_sample": false}),
    )?;
    write_json(&dir.join("tokenizer.json"), &tokenizer_json())?;
    write_json(&dir.join("tokenizer_config.json"), &tokenizer_config())?;
    write_json(
        &dir.join("special_tokens_map.json"),
        &json!({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>"}),
    )?;
    write_safetensors(&dir.join("model.safetensors"), &model_tensors(spec))
}

/// Writes a PEFT LoRA adapter (rank `rank`, alpha `2 * rank`) matching `spec` into `dir`.
pub fn write_adapter(dir: &Path, spec: &ModelSpec, rank: usize, seed: u64) -> Result<(), GenError> {
    spec.validate()?;
    if rank == 0 {
        return Err(GenError::Shape("adapter rank must be positive".into()));
    }
    create_dir(dir)?;
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "kaito-testmodel",
        "r": rank,
        "lora_alpha": 2 * rank,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "target_modules": adapter_targets(spec.arch),
    });
    write_json(&dir.join("adapter_config.json"), &config)?;
    write_safetensors(
        &dir.join("adapter_model.safetensors"),
        &adapter_tensors(spec, rank, seed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_symbols_are_a_bijection() {
        let symbols = byte_symbols();
        let unique: std::collections::HashSet<_> = symbols.iter().collect();
        assert_eq!(unique.len(), 256);
        assert_eq!(symbols[b'a' as usize], 'a');
        assert_eq!(symbols[b' ' as usize], 'Ġ');
    }

    #[test]
    fn parameter_count_matches_tensors() {
        for arch in [Arch::Llama, Arch::Phi3] {
            let spec = ModelSpec::tiny(arch, 1);
            let total: usize = model_tensors(&spec).values().map(|t| t.data.len()).sum();
            assert_eq!(total, spec.parameter_count(), "{arch:?}");
        }
        let bench = ModelSpec::bench(Arch::Llama, 1).parameter_count();
        assert!((90_000_000..130_000_000).contains(&bench), "{bench}");
    }

    #[test]
    fn generation_is_deterministic_from_seed() {
        let a = model_tensors(&ModelSpec::tiny(Arch::Llama, 7));
        let b = model_tensors(&ModelSpec::tiny(Arch::Llama, 7));
        let c = model_tensors(&ModelSpec::tiny(Arch::Llama, 8));
        let key = "model.layers.0.self_attn.q_proj.weight";
        assert_eq!(a[key].data, b[key].data);
        assert_ne!(a[key].data, c[key].data);
    }

    #[test]
    fn rejects_bad_shapes() {
        let mut spec = ModelSpec::tiny(Arch::Llama, 1);
        spec.num_heads = 3;
        assert!(spec.validate().is_err());
    }
}
