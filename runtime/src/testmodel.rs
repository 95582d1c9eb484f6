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
    /// `MistralForCausalLM` (Llama's tensors; Mistral's config).
    Mistral,
    /// `Qwen2ForCausalLM` (Llama's tensors plus q/k/v biases).
    Qwen2,
    /// `Qwen3ForCausalLM` (per-head q/k RMS norms; head size not hidden size / heads).
    Qwen3,
    /// `MixtralForCausalLM` (Mistral's attention; a sparse mixture of experts, `w1`/`w2`/`w3`).
    Mixtral,
    /// `Qwen3MoeForCausalLM` (Qwen3's attention; a mixture of experts in every layer).
    #[value(name = "qwen3-moe")]
    Qwen3Moe,
    /// `DeepseekV3ForCausalLM` (multi-head latent attention, a dense first layer then
    /// mixture-of-experts layers with a shared expert and grouped sigmoid routing), with its
    /// linear layers in block-wise FP8 (E4M3) as DeepSeek ships them.
    #[value(name = "deepseek-v3")]
    DeepseekV3,
}

impl Arch {
    /// Every architecture the generator writes.
    pub const ALL: [Arch; 8] = [
        Arch::Llama,
        Arch::Phi3,
        Arch::Mistral,
        Arch::Qwen2,
        Arch::Qwen3,
        Arch::Mixtral,
        Arch::Qwen3Moe,
        Arch::DeepseekV3,
    ];

    /// The architectures kaito-runtime serves: the preset catalog's `runtimeArchitectures`.
    /// The others of [`Arch::ALL`] load in mistral.rs 0.8.1 but fail on the first token (see
    /// `tests/architectures.rs`); they are generated to show that, and for GPU tests.
    pub const SERVED: [Arch; 5] = [
        Arch::Llama,
        Arch::Phi3,
        Arch::Mistral,
        Arch::Qwen2,
        Arch::Qwen3,
    ];

    /// The class name written to `config.json`'s `architectures`.
    pub fn hf_architecture(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Phi3 => "Phi3ForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
            Arch::Mixtral => "MixtralForCausalLM",
            Arch::Qwen3Moe => "Qwen3MoeForCausalLM",
            Arch::DeepseekV3 => "DeepseekV3ForCausalLM",
        }
    }

    fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Phi3 => "phi3",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Mixtral => "mixtral",
            Arch::Qwen3Moe => "qwen3_moe",
            Arch::DeepseekV3 => "deepseek_v3",
        }
    }

    /// Whether a LoRA adapter can be generated for it (dense attention and MLP).
    fn has_adapter(self) -> bool {
        !matches!(self, Arch::Mixtral | Arch::Qwen3Moe | Arch::DeepseekV3)
    }
}

/// Experts of the generated mixture-of-experts models, and how many each token is routed to.
const EXPERTS: usize = 4;
const EXPERTS_PER_TOKEN: usize = 2;

/// Block size of the FP8 weights of the DeepSeek-V3 model (DeepSeek's own is 128; these tiny
/// layers are smaller, and some are not a multiple of it, as DeepSeek's 576-row one is not).
const FP8_BLOCK: usize = 32;

/// The mixture-of-experts and latent-attention shape of the DeepSeek-V3 model, derived from
/// the spec's hidden size so the tiny and bench variants both stay consistent.
struct DeepseekShape {
    q_lora_rank: usize,
    kv_lora_rank: usize,
    qk_rope_head_dim: usize,
    qk_nope_head_dim: usize,
    v_head_dim: usize,
    moe_intermediate_size: usize,
    n_routed_experts: usize,
    n_shared_experts: usize,
    experts_per_token: usize,
    n_group: usize,
    topk_group: usize,
    first_k_dense: usize,
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

    /// Size of one attention head. Qwen3 decouples it from the hidden size (Qwen3-0.6B: hidden
    /// 1024, 16 heads of 128), and so does the generated Qwen3 model: twice hidden / heads.
    fn head_dim(&self) -> usize {
        match self.arch {
            Arch::Qwen3 | Arch::Qwen3Moe => 2 * self.hidden_size / self.num_heads,
            _ => self.hidden_size / self.num_heads,
        }
    }

    /// Width of the query projection's output (all heads).
    fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim()
    }

    /// Width of the key (and value) projection's output.
    fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim()
    }

    fn deepseek(&self) -> DeepseekShape {
        let head = self.hidden_size / self.num_heads;
        DeepseekShape {
            q_lora_rank: self.hidden_size / 2,
            kv_lora_rank: self.hidden_size / 2,
            qk_rope_head_dim: (head / 2).max(2),
            qk_nope_head_dim: head,
            v_head_dim: head,
            moe_intermediate_size: self.intermediate_size / 2,
            n_routed_experts: EXPERTS,
            n_shared_experts: 1,
            experts_per_token: EXPERTS_PER_TOKEN,
            n_group: 2,
            topk_group: 1,
            first_k_dense: 1,
        }
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
        if self.arch == Arch::DeepseekV3 && self.num_layers <= self.deepseek().first_k_dense {
            return Err(GenError::Shape(format!(
                "a DeepSeek-V3 model needs more than {} layers to have a mixture-of-experts layer",
                self.deepseek().first_k_dense
            )));
        }
        Ok(())
    }

    /// Number of parameters the model will have (an FP8 weight counts once, its scales not).
    pub fn parameter_count(&self) -> usize {
        layout(self)
            .iter()
            .map(|e| e.shape.iter().product::<usize>())
            .sum()
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

    /// A finite FP8 E4M3 value of magnitude 2^-6 to 3.75, as its byte: random sign, exponent
    /// field 1..=8 (bias 7), random mantissa. Never the NaN pattern (exponent 15, mantissa 7).
    fn fp8_e4m3(&mut self) -> u8 {
        let r = self.next_u64();
        let sign = ((r >> 8) & 1) as u8;
        let exponent = 1 + (r % 8) as u8;
        let mantissa = ((r >> 3) % 8) as u8;
        (sign << 7) | (exponent << 3) | mantissa
    }
}

/// The data of one tensor of the safetensors file.
enum Data {
    F32(Vec<f32>),
    /// FP8 E4M3 bytes.
    F8E4M3(Vec<u8>),
}

struct Tensor {
    shape: Vec<usize>,
    data: Data,
}

impl Tensor {
    fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self {
            shape,
            data: Data::F32(data),
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
        "architectures": [spec.arch.hf_architecture()],
        "model_type": spec.arch.model_type(),
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
    let extra = match spec.arch {
        Arch::Llama | Arch::Mistral => json!({"head_dim": spec.head_dim(), "sliding_window": null}),
        Arch::Mixtral => json!({
            "sliding_window": null,
            "num_local_experts": EXPERTS,
            "num_experts_per_tok": EXPERTS_PER_TOKEN
        }),
        Arch::Qwen3Moe => json!({
            "head_dim": spec.head_dim(),
            "sliding_window": null,
            "use_sliding_window": false,
            "max_window_layers": spec.num_layers,
            "moe_intermediate_size": spec.intermediate_size / 2,
            "num_experts": EXPERTS,
            "num_experts_per_tok": EXPERTS_PER_TOKEN,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
            "norm_topk_prob": true
        }),
        Arch::Phi3 => json!({
            "original_max_position_embeddings": spec.max_position_embeddings,
            "sliding_window": null,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attention_dropout": 0.0,
            "pad_token_id": EOS_ID
        }),
        Arch::Qwen2 | Arch::Qwen3 => json!({
            "head_dim": spec.head_dim(),
            "sliding_window": null,
            "use_sliding_window": false,
            "max_window_layers": spec.num_layers
        }),
        Arch::DeepseekV3 => {
            let d = spec.deepseek();
            json!({
                "num_key_value_heads": spec.num_heads,
                "moe_intermediate_size": d.moe_intermediate_size,
                "n_routed_experts": d.n_routed_experts,
                "n_shared_experts": d.n_shared_experts,
                "num_experts_per_tok": d.experts_per_token,
                "routed_scaling_factor": 2.5,
                "topk_method": "noaux_tc",
                "scoring_func": "sigmoid",
                "norm_topk_prob": true,
                "n_group": d.n_group,
                "topk_group": d.topk_group,
                "first_k_dense_replace": d.first_k_dense,
                "moe_layer_freq": 1,
                "q_lora_rank": d.q_lora_rank,
                "kv_lora_rank": d.kv_lora_rank,
                "qk_rope_head_dim": d.qk_rope_head_dim,
                "qk_nope_head_dim": d.qk_nope_head_dim,
                "v_head_dim": d.v_head_dim,
                "quantization_config": {
                    "quant_method": "fp8",
                    "fmt": "e4m3",
                    "activation_scheme": "dynamic",
                    "weight_block_size": [FP8_BLOCK, FP8_BLOCK]
                }
            })
        }
    };
    if let (Value::Object(map), Value::Object(extra)) = (&mut cfg, extra) {
        map.extend(extra);
    }
    cfg
}

/// Whether the language-model head may emit this token: printable ASCII and space only.
fn emittable(id: usize) -> bool {
    (32..=126).contains(&id)
}

/// How a tensor is filled.
#[derive(Clone, Copy)]
enum Init {
    /// Uniform in [-scale, scale).
    Random(f32),
    /// All ones (norm weights).
    Ones,
    /// All zeros (biases that must not move the result).
    Zeros,
    /// The language-model head: random, with the rows of tokens it must not emit zeroed.
    Head,
}

/// One tensor of the model: its name, shape, fill, and whether it is stored as block-wise FP8
/// (then a `<name>_scale_inv` tensor of per-block scales goes beside it).
struct Entry {
    name: String,
    shape: Vec<usize>,
    init: Init,
    fp8: bool,
}

/// The tensors of the model in generation order (the order the random numbers are drawn in).
fn layout(spec: &ModelSpec) -> Vec<Entry> {
    let h = spec.hidden_size;
    let inter = spec.intermediate_size;
    let (q, kv) = (spec.q_dim(), spec.kv_dim());
    let scale_in = 1.0 / (h as f32).sqrt();
    let fp8 = spec.arch == Arch::DeepseekV3;
    let mut out = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, init: Init| {
        // DeepSeek's FP8 checkpoint quantizes every linear layer of the decoder blocks but the
        // router (`mlp.gate`); embeddings, head and norms stay 16-bit.
        let quantized = fp8
            && shape.len() == 2
            && name.starts_with("model.layers.")
            && !name.ends_with("mlp.gate.weight");
        out.push(Entry {
            name,
            shape,
            init,
            fp8: quantized,
        });
    };
    let random = |fan_in: usize| Init::Random(1.0 / (fan_in as f32).sqrt());
    add(
        "model.embed_tokens.weight".into(),
        vec![VOCAB_SIZE, h],
        Init::Random(1.0),
    );
    for l in 0..spec.num_layers {
        let p = format!("model.layers.{l}");
        let attn = format!("{p}.self_attn");
        match spec.arch {
            Arch::Llama
            | Arch::Mistral
            | Arch::Qwen2
            | Arch::Qwen3
            | Arch::Mixtral
            | Arch::Qwen3Moe => {
                add(format!("{attn}.q_proj.weight"), vec![q, h], random(h));
                add(format!("{attn}.k_proj.weight"), vec![kv, h], random(h));
                add(format!("{attn}.v_proj.weight"), vec![kv, h], random(h));
                match spec.arch {
                    Arch::Mixtral => {
                        let moe = format!("{p}.block_sparse_moe");
                        add(format!("{moe}.gate.weight"), vec![EXPERTS, h], random(h));
                        for e in 0..EXPERTS {
                            let x = format!("{moe}.experts.{e}");
                            add(format!("{x}.w1.weight"), vec![inter, h], random(h));
                            add(format!("{x}.w2.weight"), vec![h, inter], random(inter));
                            add(format!("{x}.w3.weight"), vec![inter, h], random(h));
                        }
                    }
                    Arch::Qwen3Moe => {
                        let width = spec.intermediate_size / 2;
                        add(format!("{p}.mlp.gate.weight"), vec![EXPERTS, h], random(h));
                        for e in 0..EXPERTS {
                            let x = format!("{p}.mlp.experts.{e}");
                            add(format!("{x}.gate_proj.weight"), vec![width, h], random(h));
                            add(format!("{x}.up_proj.weight"), vec![width, h], random(h));
                            add(
                                format!("{x}.down_proj.weight"),
                                vec![h, width],
                                random(width),
                            );
                        }
                    }
                    _ => {
                        add(
                            format!("{p}.mlp.gate_proj.weight"),
                            vec![inter, h],
                            random(h),
                        );
                        add(format!("{p}.mlp.up_proj.weight"), vec![inter, h], random(h));
                    }
                }
                if spec.arch == Arch::Qwen2 {
                    for (proj, n) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                        add(
                            format!("{attn}.{proj}.bias"),
                            vec![n],
                            Init::Random(scale_in),
                        );
                    }
                }
                if matches!(spec.arch, Arch::Qwen3 | Arch::Qwen3Moe) {
                    for norm in ["q_norm", "k_norm"] {
                        add(
                            format!("{attn}.{norm}.weight"),
                            vec![spec.head_dim()],
                            Init::Ones,
                        );
                    }
                }
            }
            Arch::Phi3 => {
                add(
                    format!("{attn}.qkv_proj.weight"),
                    vec![q + 2 * kv, h],
                    random(h),
                );
                add(
                    format!("{p}.mlp.gate_up_proj.weight"),
                    vec![2 * inter, h],
                    random(h),
                );
            }
            Arch::DeepseekV3 => {
                let d = spec.deepseek();
                let q_head = d.qk_nope_head_dim + d.qk_rope_head_dim;
                let heads = spec.num_heads;
                add(
                    format!("{attn}.q_a_proj.weight"),
                    vec![d.q_lora_rank, h],
                    random(h),
                );
                add(
                    format!("{attn}.q_a_layernorm.weight"),
                    vec![d.q_lora_rank],
                    Init::Ones,
                );
                add(
                    format!("{attn}.q_b_proj.weight"),
                    vec![heads * q_head, d.q_lora_rank],
                    random(d.q_lora_rank),
                );
                add(
                    format!("{attn}.kv_a_proj_with_mqa.weight"),
                    vec![d.kv_lora_rank + d.qk_rope_head_dim, h],
                    random(h),
                );
                add(
                    format!("{attn}.kv_a_layernorm.weight"),
                    vec![d.kv_lora_rank],
                    Init::Ones,
                );
                add(
                    format!("{attn}.kv_b_proj.weight"),
                    vec![heads * (d.qk_nope_head_dim + d.v_head_dim), d.kv_lora_rank],
                    random(d.kv_lora_rank),
                );
                add(
                    format!("{attn}.o_proj.weight"),
                    vec![h, heads * d.v_head_dim],
                    random(heads * d.v_head_dim),
                );
                let mut mlp = |prefix: String, width: usize| {
                    add(
                        format!("{prefix}.gate_proj.weight"),
                        vec![width, h],
                        random(h),
                    );
                    add(
                        format!("{prefix}.up_proj.weight"),
                        vec![width, h],
                        random(h),
                    );
                    add(
                        format!("{prefix}.down_proj.weight"),
                        vec![h, width],
                        random(width),
                    );
                };
                if l < d.first_k_dense {
                    mlp(format!("{p}.mlp"), inter);
                } else {
                    for e in 0..d.n_routed_experts {
                        mlp(format!("{p}.mlp.experts.{e}"), d.moe_intermediate_size);
                    }
                    mlp(
                        format!("{p}.mlp.shared_experts"),
                        d.moe_intermediate_size * d.n_shared_experts,
                    );
                    add(
                        format!("{p}.mlp.gate.weight"),
                        vec![d.n_routed_experts, h],
                        random(h),
                    );
                    add(
                        format!("{p}.mlp.gate.e_score_correction_bias"),
                        vec![d.n_routed_experts],
                        Init::Zeros,
                    );
                }
            }
        }
        if spec.arch != Arch::DeepseekV3 {
            add(format!("{attn}.o_proj.weight"), vec![h, q], random(q));
        }
        if !matches!(spec.arch, Arch::DeepseekV3 | Arch::Mixtral | Arch::Qwen3Moe) {
            add(
                format!("{p}.mlp.down_proj.weight"),
                vec![h, inter],
                random(inter),
            );
        }
        add(format!("{p}.input_layernorm.weight"), vec![h], Init::Ones);
        add(
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            Init::Ones,
        );
    }
    add("model.norm.weight".into(), vec![h], Init::Ones);
    add("lm_head.weight".into(), vec![VOCAB_SIZE, h], Init::Head);
    out
}

fn model_tensors(spec: &ModelSpec) -> BTreeMap<String, Tensor> {
    let mut rng = Rng(spec.seed);
    let mut t = BTreeMap::new();
    for entry in layout(spec) {
        let n: usize = entry.shape.iter().product();
        if entry.fp8 {
            let (Init::Random(scale), [rows, cols]) = (entry.init, entry.shape.as_slice()) else {
                continue; // only random 2-D layer weights are quantized (see `layout`)
            };
            let scales = vec![rows.div_ceil(FP8_BLOCK), cols.div_ceil(FP8_BLOCK)];
            let count = scales[0] * scales[1];
            let bytes = (0..n).map(|_| rng.fp8_e4m3()).collect();
            // The E4M3 values reach 3.75; a scale of scale/2 keeps the weights near the
            // [-scale, scale) of the 16-bit layers.
            t.insert(
                format!("{}_scale_inv", entry.name),
                Tensor::f32(scales, vec![scale / 2.0; count]),
            );
            t.insert(
                entry.name,
                Tensor {
                    shape: entry.shape,
                    data: Data::F8E4M3(bytes),
                },
            );
            continue;
        }
        let data = match entry.init {
            Init::Random(scale) => (0..n).map(|_| rng.uniform(scale)).collect(),
            Init::Ones => vec![1.0; n],
            Init::Zeros => vec![0.0; n],
            Init::Head => {
                let h = entry.shape[1];
                let mut head: Vec<f32> = (0..n).map(|_| rng.uniform(1.0)).collect();
                for id in (0..VOCAB_SIZE).filter(|id| !emittable(*id)) {
                    head[id * h..(id + 1) * h].fill(0.0);
                }
                head
            }
        };
        t.insert(entry.name, Tensor::f32(entry.shape, data));
    }
    t
}

/// LoRA target modules of the generated adapter, per architecture.
fn adapter_targets(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::Phi3 => &["qkv_proj", "o_proj", "down_proj"],
        _ => &["q_proj", "v_proj", "o_proj", "down_proj"],
    }
}

fn adapter_tensors(spec: &ModelSpec, rank: usize, seed: u64) -> BTreeMap<String, Tensor> {
    let mut rng = Rng(seed ^ 0xADA9_7E55);
    let h = spec.hidden_size;
    let (q, kv) = (spec.q_dim(), spec.kv_dim());
    let inter = spec.intermediate_size;
    let mut t = BTreeMap::new();
    let mut random = |rows: usize, cols: usize| {
        let data = (0..rows * cols).map(|_| rng.uniform(0.5)).collect();
        Tensor::f32(vec![rows, cols], data)
    };
    for l in 0..spec.num_layers {
        for target in adapter_targets(spec.arch) {
            let (module, out_dim, in_dim) = match *target {
                "q_proj" => ("self_attn.q_proj", q, h),
                "v_proj" => ("self_attn.v_proj", kv, h),
                "qkv_proj" => ("self_attn.qkv_proj", q + 2 * kv, h),
                "o_proj" => ("self_attn.o_proj", h, q),
                _ => ("mlp.down_proj", h, inter),
            };
            let p = format!("base_model.model.model.layers.{l}.{module}");
            t.insert(format!("{p}.lora_A.weight"), random(rank, in_dim));
            t.insert(format!("{p}.lora_B.weight"), random(out_dim, rank));
        }
    }
    t
}

fn write_safetensors(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<(), GenError> {
    let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let (dtype, raw) = match &t.data {
                Data::F32(values) => (
                    Dtype::F32,
                    values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
                Data::F8E4M3(raw) => (Dtype::F8_E4M3, raw.clone()),
            };
            (name.clone(), dtype, t.shape.clone(), raw)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, dtype, shape, raw)| {
            TensorView::new(*dtype, shape.clone(), raw).map(|view| (name.clone(), view))
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
    if !spec.arch.has_adapter() {
        return Err(GenError::Shape(format!(
            "no adapter is generated for {}; pick a dense architecture",
            spec.arch.hf_architecture()
        )));
    }
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

    fn f32_data(t: &Tensor) -> &[f32] {
        match &t.data {
            Data::F32(v) => v,
            Data::F8E4M3(_) => panic!("expected f32 data"),
        }
    }

    #[test]
    fn parameter_count_matches_the_closed_form_and_the_tensors() {
        // Dense models: attention (q, o: h x h; k, v: h x kv), MLP (3 x h x inter), two norms.
        for arch in [Arch::Llama, Arch::Phi3, Arch::Mistral] {
            let spec = ModelSpec::tiny(arch, 1);
            let (h, kv) = (spec.hidden_size, spec.kv_dim());
            let per_layer = h * h * 2 + h * kv * 2 + 3 * h * spec.intermediate_size + 2 * h;
            let closed = VOCAB_SIZE * h * 2 + spec.num_layers * per_layer + h;
            assert_eq!(spec.parameter_count(), closed, "{arch:?}");
        }
        for arch in Arch::ALL {
            let spec = ModelSpec::tiny(arch, 1);
            let total: usize = model_tensors(&spec)
                .iter()
                .filter(|(name, _)| !name.ends_with("_scale_inv"))
                .map(|(_, t)| t.shape.iter().product::<usize>())
                .sum();
            assert_eq!(total, spec.parameter_count(), "{arch:?}");
        }
        let bench = ModelSpec::bench(Arch::Llama, 1).parameter_count();
        assert!((90_000_000..130_000_000).contains(&bench), "{bench}");
    }

    #[test]
    fn config_names_the_architecture_the_runtime_picks_its_loader_by() {
        for arch in Arch::ALL {
            let cfg = config_json(&ModelSpec::tiny(arch, 1));
            assert_eq!(cfg["architectures"], json!([arch.hf_architecture()]));
            assert_eq!(cfg["model_type"], arch.model_type());
        }
    }

    #[test]
    fn qwen3_heads_are_wider_than_hidden_over_heads() {
        let spec = ModelSpec::tiny(Arch::Qwen3, 1);
        let t = model_tensors(&spec);
        assert_eq!(config_json(&spec)["head_dim"], 32);
        assert_eq!(t["model.layers.0.self_attn.q_proj.weight"].shape, [128, 64]);
        assert_eq!(t["model.layers.0.self_attn.o_proj.weight"].shape, [64, 128]);
        assert_eq!(t["model.layers.1.self_attn.k_norm.weight"].shape, [32]);
    }

    #[test]
    fn mixture_of_experts_models_have_a_router_and_experts_per_layer() {
        let mixtral = model_tensors(&ModelSpec::tiny(Arch::Mixtral, 1));
        let moe = "model.layers.1.block_sparse_moe";
        assert_eq!(mixtral[&format!("{moe}.gate.weight")].shape, [EXPERTS, 64]);
        assert_eq!(
            mixtral[&format!("{moe}.experts.3.w2.weight")].shape,
            [64, 128]
        );
        assert!(!mixtral.contains_key("model.layers.1.mlp.down_proj.weight"));
        let qwen = model_tensors(&ModelSpec::tiny(Arch::Qwen3Moe, 1));
        assert_eq!(
            qwen["model.layers.0.mlp.experts.0.up_proj.weight"].shape,
            [64, 64]
        );
        assert_eq!(qwen["model.layers.0.self_attn.q_norm.weight"].shape, [32]);
    }

    #[test]
    fn deepseek_v3_projections_are_block_fp8_and_the_rest_is_f32() {
        let spec = ModelSpec::tiny(Arch::DeepseekV3, 1);
        let t = model_tensors(&spec);
        // 40 rows (latent 32 + rope 8) span two 32-row blocks, as DeepSeek's 576 span 4.5.
        let kv_a = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight";
        assert_eq!(t[kv_a].shape, [40, 64]);
        assert!(matches!(&t[kv_a].data, Data::F8E4M3(b) if b.len() == 40 * 64));
        assert_eq!(t[&format!("{kv_a}_scale_inv")].shape, [2, 2]);
        // Layer 0 is dense, layer 1 routes over 4 experts plus a shared one.
        assert!(t.contains_key("model.layers.0.mlp.gate_proj.weight"));
        assert!(t.contains_key("model.layers.1.mlp.experts.3.down_proj.weight"));
        assert!(t.contains_key("model.layers.1.mlp.shared_experts.up_proj.weight"));
        assert!(matches!(
            t["model.layers.1.mlp.gate.weight"].data,
            Data::F32(_)
        ));
        assert!(matches!(t["lm_head.weight"].data, Data::F32(_)));
        // No byte is E4M3's NaN (S.1111.111).
        let nan = t
            .values()
            .filter_map(|t| match &t.data {
                Data::F8E4M3(b) => Some(b),
                Data::F32(_) => None,
            })
            .flatten()
            .any(|b| b & 0x7F == 0x7F);
        assert!(!nan);
        let cfg = config_json(&spec);
        assert_eq!(cfg["quantization_config"]["quant_method"], "fp8");
        assert!(write_adapter(Path::new("/nonexistent"), &spec, 8, 1).is_err());
    }

    #[test]
    fn generation_is_deterministic_from_seed() {
        let a = model_tensors(&ModelSpec::tiny(Arch::Llama, 7));
        let b = model_tensors(&ModelSpec::tiny(Arch::Llama, 7));
        let c = model_tensors(&ModelSpec::tiny(Arch::Llama, 8));
        let key = "model.layers.0.self_attn.q_proj.weight";
        assert_eq!(f32_data(&a[key]), f32_data(&b[key]));
        assert_ne!(f32_data(&a[key]), f32_data(&c[key]));
    }

    #[test]
    fn rejects_bad_shapes() {
        let mut spec = ModelSpec::tiny(Arch::Llama, 1);
        spec.num_heads = 3;
        assert!(spec.validate().is_err());
    }
}
