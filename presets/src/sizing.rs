//! Does a model fit a node? Pure functions from a preset, a mode, runtime parameters and a
//! node's GPU shape to a [`Plan`] that says yes or no, with every reason.
//!
//! Serving follows upstream KAITO's estimate: each GPU can use 84% of its memory; the
//! runtime reserves 2.3 GiB plus the KV cache; the weights (plus 2%) with 5% headroom must
//! fit in what is left. The runtime (mistral.rs) serves one whole copy of the model per
//! node, tensor-parallel across that node's GPUs, so a node must hold the model by itself:
//! more nodes add replicas, not memory.
//!
//! On a CPU-only size (no GPU) a preset is served on the CPU, in f32, when
//! [`cpu_serving_memory`] — the one CPU estimate, which the serving pod also requests — fits
//! in [`CPU_USABLE_FRACTION`] of the node's memory. Tuning needs a GPU.

use std::fmt;

use crate::memory::Memory;
use crate::models::Preset;
use crate::skus::{Cloud, GpuShape, Sku, SkuCatalog};

/// Share of each GPU's memory the runtime may use.
pub const USABLE_FRACTION: f64 = 0.84;
/// Memory the runtime keeps on each GPU for itself, before the KV cache.
pub const RUNTIME_RESERVE_GIB: f64 = 2.3;
/// Weights grow by this factor once loaded.
pub const WEIGHTS_OVERHEAD: f64 = 1.02;
/// Headroom kept above the loaded weights.
pub const HEADROOM: f64 = 1.05;
/// The shortest context worth serving when the model's own limit is longer.
pub const MIN_SERVING_CONTEXT: u32 = 2048;
/// Context lengths chosen by sizing are multiples of this.
pub const CONTEXT_STEP: u32 = 256;
/// Share of a CPU-only node's memory a serving pod may request: the kubelet's and the
/// system's reservations and the eviction threshold keep the rest (AKS reserves about 2.6 GiB
/// of a 16 GiB node).
pub const CPU_USABLE_FRACTION: f64 = 0.8;
/// Memory the runtime needs on a CPU beside the weights and the KV cache (the process,
/// tokenizer, activations, request buffers).
pub const CPU_RUNTIME_OVERHEAD_GIB: f64 = 1.0;
/// The runtime computes in f32 on a CPU (candle has no CPU bf16 matmul; x86 has no f16
/// arithmetic), so 16-bit weights and the KV cache take twice the bytes the catalog gives.
pub const CPU_F32_FACTOR: f64 = 2.0;

/// What the node will do with the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Serve it for inference.
    Serve,
    /// Fine-tune a LoRA adapter on 16-bit base weights.
    TuneLora,
    /// Fine-tune a LoRA adapter on 4-bit (NF4) base weights.
    TuneQlora,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Serve => "serving",
            Self::TuneLora => "LoRA tuning",
            Self::TuneQlora => "QLoRA tuning",
        })
    }
}

/// Runtime parameters that change the memory a model needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeParams {
    /// The user's `max-model-len`; `None` lets sizing choose the longest that fits.
    pub max_model_len: Option<u32>,
}

/// The numeric precision the runtime will compute in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// bfloat16 (compute capability 8.0 and newer).
    Bf16,
    /// float16 (older GPUs such as V100 and T4).
    F16,
    /// float32 (on a CPU).
    F32,
}

impl Dtype {
    /// The runtime's name for the precision (its `--dtype` value).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
            Self::F32 => "f32",
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason a model does not fit a node. The text says what is missing.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Problem {
    /// Tuning asked of a node without a GPU.
    #[error(
        "{mode} needs a GPU and {node} has none; choose a GPU size (only serving runs on a CPU)"
    )]
    TuningNeedsGpu {
        /// What for.
        mode: Mode,
        /// The node's description.
        node: String,
    },
    /// A CPU-only size whose memory the SKU catalog does not give.
    #[error(
        "{node} has no GPU and the SKU catalog gives no memory for it, so serving on its CPU cannot be sized; add `memory` to its SKU catalog entry, or choose a GPU size"
    )]
    CpuMemoryUnknown {
        /// The node's description.
        node: String,
    },
    /// Serving on a CPU-only node needs more memory than a pod may use there.
    #[error(
        "serving {preset} on the CPU needs {needs} of memory ({weights} of weights, {kv_cache} of KV cache for {context} tokens in f32, {runtime} for the runtime); {node} lets a pod use {has}"
    )]
    CpuMemory {
        /// Preset name.
        preset: String,
        /// The whole estimate.
        needs: Memory,
        /// Its weights part.
        weights: Memory,
        /// Its KV-cache part.
        kv_cache: Memory,
        /// The context the KV cache is counted for.
        context: u32,
        /// Its runtime part.
        runtime: Memory,
        /// The node's description.
        node: String,
        /// What a pod may use of the node's memory.
        has: Memory,
    },
    /// The node's total GPU memory is below the preset's minimum.
    #[error("{preset} needs at least {needs} of GPU memory on one node; {node} has {has}")]
    NodeMemory {
        /// Preset name.
        preset: String,
        /// What it needs.
        needs: Memory,
        /// The node's description.
        node: String,
        /// What the node has.
        has: Memory,
    },
    /// Each GPU is too small.
    #[error("{mode} {preset} needs at least {needs} on each GPU; {node} has {has} per GPU")]
    PerGpuMemory {
        /// What for.
        mode: Mode,
        /// Preset name.
        preset: String,
        /// Per-GPU need.
        needs: Memory,
        /// The node's description.
        node: String,
        /// Per-GPU memory of the node.
        has: Memory,
    },
    /// The node has too few GPUs.
    #[error("{preset} needs at least {needs} GPUs on one node; {node} has {has}")]
    TooFewGpus {
        /// Preset name.
        preset: String,
        /// GPUs needed.
        needs: u32,
        /// The node's description.
        node: String,
        /// GPUs the node has.
        has: u32,
    },
    /// The weights alone do not fit in what the runtime can use.
    #[error(
        "{preset}'s weights ({weights}) do not fit on {node} once the runtime's reserve and headroom are counted"
    )]
    WeightsDoNotFit {
        /// Preset name.
        preset: String,
        /// Weight size.
        weights: Memory,
        /// The node's description.
        node: String,
    },
    /// The requested context is longer than the model's.
    #[error("max-model-len {requested} is longer than {preset}'s context limit of {limit} tokens")]
    ContextTooLong {
        /// Preset name.
        preset: String,
        /// Requested length.
        requested: u32,
        /// Model limit.
        limit: u32,
    },
    /// The KV cache for the context does not fit.
    #[error(
        "the KV cache for {requested} tokens of {preset} does not fit on {node}; at most {fits} tokens fit"
    )]
    KvCache {
        /// Preset name.
        preset: String,
        /// Requested (or minimum useful) context.
        requested: u32,
        /// The node's description.
        node: String,
        /// Longest context that fits.
        fits: u32,
    },
    /// The preset cannot be tuned.
    #[error("{preset} does not support fine-tuning")]
    TuningNotSupported {
        /// Preset name.
        preset: String,
    },
}

/// The result of sizing: does the model fit, how, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// What the plan is for.
    pub mode: Mode,
    /// The node shape it was computed for.
    pub shape: GpuShape,
    /// Every reason the model does not fit (empty when it fits).
    pub problems: Vec<Problem>,
    /// GPUs each replica uses: all the GPUs of its node.
    pub gpus_per_node: u32,
    /// GPUs the weights need at least.
    pub gpus_needed: u32,
    /// Precision to compute in.
    pub dtype: Dtype,
    /// Context length to serve with (serving only).
    pub max_model_len: Option<u32>,
    /// Memory the preset requires of the node's GPUs (serving), of each GPU (tuning), or of
    /// a CPU-only node (serving on the CPU: [`cpu_serving_memory`], which the pod requests).
    pub needs: Memory,
    /// Plain-language notes: choices sizing made that a user should know about.
    pub notes: Vec<String>,
}

impl Plan {
    /// True when nothing stops the model from running on the node.
    pub fn fits(&self) -> bool {
        self.problems.is_empty()
    }

    /// One line a person reads, e.g.
    /// `Standard_NC6s_v3 (1× V100, 16 GiB): fits serving (needs 9 GiB), f16, context 4096`.
    pub fn summary(&self) -> String {
        let verdict = if self.fits() { "fits" } else { "does not fit" };
        let mut s = format!(
            "{}: {verdict} {} (needs {}), {}",
            self.shape.describe(),
            self.mode,
            self.needs,
            self.dtype
        );
        if let Some(len) = self.max_model_len {
            s.push_str(&format!(", context {len}"));
        }
        s
    }
}

/// What serving a preset on a CPU takes of the node's memory; see [`cpu_serving_memory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuMemoryEstimate {
    /// The weights as loaded.
    pub weights: Memory,
    /// The KV cache for the context, in f32.
    pub kv_cache: Memory,
    /// The runtime's own memory.
    pub runtime: Memory,
}

impl CpuMemoryEstimate {
    /// The sum: what admission checks against the node and the serving pod requests.
    pub fn total(&self) -> Memory {
        Memory::bytes(self.weights.as_bytes() + self.kv_cache.as_bytes() + self.runtime.as_bytes())
    }
}

/// The memory serving `preset` on a CPU takes with a context of `context` tokens — the one
/// CPU estimate, used by admission and as the serving pod's memory request:
/// - the weights: a GGUF preset's quantized tensors stay as the file holds them; 16-bit
///   safetensors weights are loaded in f32, [`CPU_F32_FACTOR`] times the catalog's `weights`;
/// - the KV cache: `kvBytesPerToken` (16-bit) × [`CPU_F32_FACTOR`] × `context`, the cache of
///   `context` tokens in flight (as on a GPU, concurrent sequences share this budget);
/// - [`CPU_RUNTIME_OVERHEAD_GIB`] for the runtime itself.
pub fn cpu_serving_memory(preset: &Preset, context: u32) -> CpuMemoryEstimate {
    let weights = if preset.huggingface.file.is_some() {
        preset.weights
    } else {
        Memory::bytes((preset.weights.as_bytes() as f64 * CPU_F32_FACTOR) as u64)
    };
    let kv = preset.kv_bytes_per_token as f64 * CPU_F32_FACTOR * f64::from(context);
    CpuMemoryEstimate {
        weights,
        kv_cache: Memory::bytes(kv as u64),
        runtime: Memory::gib_f64(CPU_RUNTIME_OVERHEAD_GIB),
    }
}

/// Sizes `preset` for `mode` on one node of `shape`.
pub fn plan(preset: &Preset, mode: Mode, params: RuntimeParams, shape: &GpuShape) -> Plan {
    let dtype = if shape.is_cpu_only() {
        Dtype::F32
    } else if shape.supports_bf16() {
        Dtype::Bf16
    } else {
        Dtype::F16
    };
    let mut plan = Plan {
        mode,
        shape: shape.clone(),
        problems: Vec::new(),
        gpus_per_node: shape.gpus,
        gpus_needed: preset.serve.min_gpus,
        dtype,
        max_model_len: None,
        needs: preset.serve.gpu_memory,
        notes: Vec::new(),
    };
    let node = shape.describe();
    if shape.is_cpu_only() {
        plan.gpus_needed = 0;
        match mode {
            Mode::Serve => size_cpu_serving(preset, params, shape, &mut plan),
            Mode::TuneLora | Mode::TuneQlora => {
                plan.problems.push(Problem::TuningNeedsGpu { mode, node })
            }
        }
        return plan;
    }
    if dtype == Dtype::F16 {
        let cc = shape
            .compute_capability
            .map(|c| format!(" (compute capability {c})"))
            .unwrap_or_default();
        plan.notes.push(format!(
            "{}{cc} has no bf16: the model runs in f16",
            shape.gpu_model
        ));
    }
    match mode {
        Mode::Serve => size_serving(preset, params, shape, &mut plan),
        Mode::TuneLora | Mode::TuneQlora => size_tuning(preset, mode, shape, &mut plan),
    }
    plan
}

fn size_serving(preset: &Preset, params: RuntimeParams, shape: &GpuShape, plan: &mut Plan) {
    let node = shape.describe();
    let name = preset.name.clone();
    if shape.gpu_memory < preset.serve.gpu_memory {
        plan.problems.push(Problem::NodeMemory {
            preset: name.clone(),
            needs: preset.serve.gpu_memory,
            node: node.clone(),
            has: shape.gpu_memory,
        });
    }
    let per_gpu = shape.per_gpu_memory();
    if per_gpu < preset.serve.per_gpu_memory {
        plan.problems.push(Problem::PerGpuMemory {
            mode: Mode::Serve,
            preset: name.clone(),
            needs: preset.serve.per_gpu_memory,
            node: node.clone(),
            has: per_gpu,
        });
    }
    let usable = per_gpu.as_gib() * USABLE_FRACTION;
    let weights = preset.weights.as_gib();
    let by_weights = (weights / usable).floor() as u32 + 1;
    plan.gpus_needed = by_weights.max(preset.serve.min_gpus);
    if plan.gpus_needed > shape.gpus {
        plan.problems.push(Problem::TooFewGpus {
            preset: name.clone(),
            needs: plan.gpus_needed,
            node: node.clone(),
            has: shape.gpus,
        });
        return;
    }
    // All GPUs of the node share the weights (tensor parallel) and the KV cache.
    let gpus = f64::from(shape.gpus);
    let weights_per_gpu = weights * WEIGHTS_OVERHEAD / gpus;
    let kv_budget_per_gpu = usable - RUNTIME_RESERVE_GIB - weights_per_gpu * HEADROOM;
    if kv_budget_per_gpu <= 0.0 {
        plan.problems.push(Problem::WeightsDoNotFit {
            preset: name,
            weights: preset.weights,
            node,
        });
        return;
    }
    let kv_bytes = kv_budget_per_gpu * gpus * (1u64 << 30) as f64;
    let fits_tokens = (kv_bytes / preset.kv_bytes_per_token as f64).min(f64::from(u32::MAX)) as u32;
    let fits_tokens = fits_tokens / CONTEXT_STEP * CONTEXT_STEP;
    match params.max_model_len {
        Some(requested) if requested > preset.context_length => {
            plan.problems.push(Problem::ContextTooLong {
                preset: name,
                requested,
                limit: preset.context_length,
            });
        }
        Some(requested) if requested > fits_tokens => {
            plan.problems.push(Problem::KvCache {
                preset: name,
                requested,
                node,
                fits: fits_tokens,
            });
        }
        Some(requested) => plan.max_model_len = Some(requested),
        None if fits_tokens >= preset.context_length => {
            plan.max_model_len = Some(preset.context_length)
        }
        None => {
            let minimum = MIN_SERVING_CONTEXT.min(preset.context_length);
            if fits_tokens < minimum {
                plan.problems.push(Problem::KvCache {
                    preset: name,
                    requested: minimum,
                    node,
                    fits: fits_tokens,
                });
            } else {
                plan.max_model_len = Some(fits_tokens);
                plan.notes.push(format!(
                    "context limited to {fits_tokens} tokens (the model supports {}) so the KV cache fits in GPU memory",
                    preset.context_length
                ));
            }
        }
    }
}

fn size_cpu_serving(preset: &Preset, params: RuntimeParams, shape: &GpuShape, plan: &mut Plan) {
    let node = shape.describe();
    let Some(memory) = shape.memory else {
        plan.problems.push(Problem::CpuMemoryUnknown { node });
        return;
    };
    let usable = Memory::gib_f64(memory.as_gib() * CPU_USABLE_FRACTION);
    // Tokens whose KV cache fits beside the weights and the runtime.
    let fixed = cpu_serving_memory(preset, 0).total();
    let per_token = cpu_serving_memory(preset, 1).kv_cache.as_bytes().max(1);
    let room = usable.as_bytes().saturating_sub(fixed.as_bytes());
    let fits_tokens = u32::try_from(room / per_token).unwrap_or(u32::MAX);
    let fits_tokens = fits_tokens / CONTEXT_STEP * CONTEXT_STEP;
    let context = match params.max_model_len {
        Some(requested) if requested > preset.context_length => {
            plan.problems.push(Problem::ContextTooLong {
                preset: preset.name.clone(),
                requested,
                limit: preset.context_length,
            });
            return;
        }
        Some(requested) => requested,
        None if fits_tokens >= preset.context_length => preset.context_length,
        None => {
            let context = fits_tokens.max(MIN_SERVING_CONTEXT.min(preset.context_length));
            if context == fits_tokens {
                plan.notes.push(format!(
                    "context limited to {fits_tokens} tokens (the model supports {}) so the KV cache fits in the node's memory",
                    preset.context_length
                ));
            }
            context
        }
    };
    let estimate = cpu_serving_memory(preset, context);
    plan.needs = estimate.total();
    if estimate.total() > usable {
        plan.problems.push(Problem::CpuMemory {
            preset: preset.name.clone(),
            needs: estimate.total(),
            weights: estimate.weights,
            kv_cache: estimate.kv_cache,
            context,
            runtime: estimate.runtime,
            node,
            has: usable,
        });
        return;
    }
    plan.max_model_len = Some(context);
    plan.notes.push(format!(
        "no GPU: served on the CPU in f32 (slow; meant for small models); the pod requests {} of memory",
        estimate.total()
    ));
}

fn size_tuning(preset: &Preset, mode: Mode, shape: &GpuShape, plan: &mut Plan) {
    let Some(tuning) = &preset.tuning else {
        plan.problems.push(Problem::TuningNotSupported {
            preset: preset.name.clone(),
        });
        return;
    };
    plan.gpus_needed = 1;
    plan.needs = if mode == Mode::TuneQlora {
        tuning.qlora_gpu_memory
    } else {
        tuning.lora_gpu_memory
    };
    let per_gpu = shape.per_gpu_memory();
    if per_gpu < plan.needs {
        plan.problems.push(Problem::PerGpuMemory {
            mode,
            preset: preset.name.clone(),
            needs: plan.needs,
            node: shape.describe(),
            has: per_gpu,
        });
    }
    if mode == Mode::TuneQlora {
        plan.notes.push(format!(
            "QLoRA loads the base model in 4-bit NF4 and computes in {}",
            plan.dtype
        ));
    }
}

/// Every GPU size of `cloud` that fits, most preferred first: fewest GPUs, then least GPU
/// memory, then fewest vCPUs (a proxy for price), then name.
pub fn fitting_skus<'a>(
    preset: &Preset,
    mode: Mode,
    params: RuntimeParams,
    catalog: &'a SkuCatalog,
    cloud: Cloud,
) -> Vec<(&'a Sku, Plan)> {
    let mut fits: Vec<(&Sku, Plan)> = catalog
        .gpu_skus(cloud)
        .map(|sku| (sku, plan(preset, mode, params, &sku.shape())))
        .filter(|(_, plan)| plan.fits())
        .collect();
    fits.sort_by(|(a, _), (b, _)| {
        (a.gpus, a.gpu_memory, a.vcpus, &a.name).cmp(&(b.gpus, b.gpu_memory, b.vcpus, &b.name))
    });
    fits
}

/// Every CPU-only size of `cloud` on which `preset` is served on the CPU, least memory first
/// (then fewest vCPUs, then name). Empty for tuning, which needs a GPU.
pub fn fitting_cpu_skus<'a>(
    preset: &Preset,
    mode: Mode,
    params: RuntimeParams,
    catalog: &'a SkuCatalog,
    cloud: Cloud,
) -> Vec<(&'a Sku, Plan)> {
    if mode != Mode::Serve {
        return Vec::new();
    }
    let mut fits: Vec<(&Sku, Plan)> = catalog
        .cpu_skus(cloud)
        .map(|sku| (sku, plan(preset, mode, params, &sku.shape())))
        .filter(|(_, plan)| plan.fits())
        .collect();
    fits.sort_by(|(a, _), (b, _)| (a.memory, a.vcpus, &a.name).cmp(&(b.memory, b.vcpus, &b.name)));
    fits
}

/// The smallest GPU size of `cloud` that fits (see [`fitting_skus`] for the order).
pub fn smallest_fitting_sku<'a>(
    preset: &Preset,
    mode: Mode,
    params: RuntimeParams,
    catalog: &'a SkuCatalog,
    cloud: Cloud,
) -> Option<(&'a Sku, Plan)> {
    fitting_skus(preset, mode, params, catalog, cloud)
        .into_iter()
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::PresetCatalog;
    use crate::skus::{
        LABEL_CUDA_MAJOR, LABEL_CUDA_MINOR, LABEL_GPU_COUNT, LABEL_GPU_MEMORY, LABEL_GPU_PRODUCT,
    };

    fn preset(name: &str) -> &'static Preset {
        PresetCatalog::builtin()
            .get(name)
            .expect("preset in catalog")
    }

    fn azure(name: &str) -> GpuShape {
        SkuCatalog::builtin()
            .get(Cloud::Azure, name)
            .expect("sku in catalog")
            .shape()
    }

    fn size(preset_name: &str, mode: Mode, sku: &str) -> Plan {
        plan(
            preset(preset_name),
            mode,
            RuntimeParams::default(),
            &azure(sku),
        )
    }

    fn smallest(preset_name: &str, mode: Mode, cloud: Cloud) -> Option<String> {
        smallest_fitting_sku(
            preset(preset_name),
            mode,
            RuntimeParams::default(),
            SkuCatalog::builtin(),
            cloud,
        )
        .map(|(sku, _)| sku.name.clone())
    }

    #[test]
    fn phi3_mini_is_served_on_one_v100_in_f16_with_its_full_4k_context() {
        let p = size("phi-3-mini-4k-instruct", Mode::Serve, "Standard_NC6s_v3");
        assert!(p.fits(), "{:?}", p.problems);
        assert_eq!((p.gpus_per_node, p.gpus_needed), (1, 1));
        assert_eq!(p.dtype, Dtype::F16);
        assert_eq!(p.max_model_len, Some(4096));
    }

    #[test]
    fn phi3_mini_128k_fits_a_v100_by_shortening_the_context_and_says_so() {
        let p = size("phi-3-mini-128k-instruct", Mode::Serve, "Standard_NC6s_v3");
        assert!(p.fits(), "{:?}", p.problems);
        let len = p.max_model_len.expect("a context is chosen");
        assert!((MIN_SERVING_CONTEXT..131072).contains(&len), "{len}");
        assert_eq!(len % CONTEXT_STEP, 0);
        assert!(
            p.notes.iter().any(|n| n.contains("context limited")),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn phi3_mini_qlora_tuning_fits_a_v100_but_lora_does_not() {
        let q = size(
            "phi-3-mini-128k-instruct",
            Mode::TuneQlora,
            "Standard_NC6s_v3",
        );
        assert!(q.fits(), "{:?}", q.problems);
        assert_eq!(q.dtype, Dtype::F16);
        let l = size(
            "phi-3-mini-128k-instruct",
            Mode::TuneLora,
            "Standard_NC6s_v3",
        );
        assert!(
            matches!(l.problems.as_slice(), [Problem::PerGpuMemory { .. }]),
            "{:?}",
            l.problems
        );
    }

    #[test]
    fn phi3_medium_does_not_fit_a_v100_and_the_reason_names_both_sizes() {
        let p = size("phi-3-medium-4k-instruct", Mode::Serve, "Standard_NC6s_v3");
        assert!(!p.fits());
        let text = p
            .problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        assert!(
            text.contains("28 GiB") && text.contains("16 GiB") && text.contains("Standard_NC6s_v3"),
            "{text}"
        );
    }

    #[test]
    fn phi3_medium_smallest_azure_fit_is_a_single_a100() {
        assert_eq!(
            smallest("phi-3-medium-4k-instruct", Mode::Serve, Cloud::Azure).as_deref(),
            Some("Standard_NC24ads_A100_v4")
        );
        let all = fitting_skus(
            preset("phi-3-medium-4k-instruct"),
            Mode::Serve,
            RuntimeParams::default(),
            SkuCatalog::builtin(),
            Cloud::Azure,
        );
        assert!(
            all.iter()
                .all(|(s, p)| p.fits() && s.gpu_memory >= Memory::gib(28))
        );
        assert!(!all.iter().any(|(s, _)| s.name == "Standard_NC6s_v3"));
    }

    #[test]
    fn two_v100s_on_one_node_cannot_hold_phi3_medium_with_headroom() {
        // 32 GiB in total passes the 28 GiB minimum, but 2 x 16 GiB leaves no room for
        // the runtime's reserve next to 13 GiB of weights on each GPU.
        let p = size("phi-3-medium-4k-instruct", Mode::Serve, "Standard_NC12s_v3");
        assert!(
            matches!(p.problems.as_slice(), [Problem::WeightsDoNotFit { .. }]),
            "{:?}",
            p.problems
        );
        assert!(size("phi-3-medium-4k-instruct", Mode::Serve, "Standard_NC24s_v3").fits());
    }

    #[test]
    fn smallest_fit_prefers_fewer_gpus_then_less_memory_then_fewer_vcpus() {
        // Four 16 GiB single-GPU sizes fit phi-3-mini; the T4 with 4 vCPUs is the smallest.
        assert_eq!(
            smallest("phi-3-mini-4k-instruct", Mode::Serve, Cloud::Azure).as_deref(),
            Some("Standard_NC4as_T4_v3")
        );
        assert_eq!(
            smallest("phi-3-mini-4k-instruct", Mode::Serve, Cloud::Aws).as_deref(),
            Some("g5.xlarge")
        );
    }

    #[test]
    fn llama_70b_needs_several_gpus_on_one_node() {
        let one = size(
            "llama-3.3-70b-instruct",
            Mode::Serve,
            "Standard_NC40ads_H100_v5",
        );
        assert!(
            one.problems.iter().any(|p| matches!(
                p,
                Problem::TooFewGpus {
                    needs: 2,
                    has: 1,
                    ..
                }
            )),
            "{:?}",
            one.problems
        );
        let (sku, plan) = smallest_fitting_sku(
            preset("llama-3.3-70b-instruct"),
            Mode::Serve,
            RuntimeParams::default(),
            SkuCatalog::builtin(),
            Cloud::Azure,
        )
        .expect("some Azure size fits");
        assert!(plan.gpus_per_node >= 2);
        assert_eq!(sku.name, "Standard_NC80adis_H100_v5");
        assert_eq!(plan.dtype, Dtype::Bf16);
        // 2 x 80 GiB A100 has the total memory but not the per-GPU room.
        assert!(
            !size(
                "llama-3.3-70b-instruct",
                Mode::Serve,
                "Standard_NC48ads_A100_v4"
            )
            .fits()
        );
    }

    #[test]
    fn a_small_preset_is_served_on_a_cpu_only_size_with_its_full_context() {
        let p = size("smollm2-135m-instruct", Mode::Serve, "Standard_D4s_v3");
        assert!(p.fits(), "{:?}", p.problems);
        assert_eq!(p.dtype, Dtype::F32);
        assert_eq!((p.gpus_per_node, p.gpus_needed), (0, 0));
        assert_eq!(p.max_model_len, Some(8192));
        // GGUF weights as in the file (98362432 bytes), f32 KV cache for 8192 tokens
        // (2 x 23040 x 8192 bytes), 1 GiB for the runtime.
        let want = 98_362_432 + 2 * 23_040 * 8192 + (1u64 << 30);
        assert_eq!(p.needs, Memory::bytes(want));
        assert_eq!(
            p.needs,
            cpu_serving_memory(preset("smollm2-135m-instruct"), 8192).total()
        );
        assert!(
            p.summary()
                .starts_with("Standard_D4s_v3 (no GPU, 16 GiB memory): fits serving"),
            "{}",
            p.summary()
        );
        assert!(
            p.notes.iter().any(|n| n.contains("served on the CPU")),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn safetensors_weights_count_twice_on_a_cpu_because_they_are_loaded_in_f32() {
        let p = preset("phi-3-mini-4k-instruct");
        let e = cpu_serving_memory(p, 4096);
        assert_eq!(e.weights, Memory::bytes(2 * p.weights.as_bytes()));
        assert_eq!(e.kv_cache, Memory::bytes(2 * 393_216 * 4096));
        // 14.24 + 3 + 1 GiB does not fit the 12.8 GiB a pod may use of 16 GiB, fits 32 GiB.
        let small = size("phi-3-mini-4k-instruct", Mode::Serve, "Standard_D4s_v3");
        assert!(
            matches!(small.problems.as_slice(), [Problem::CpuMemory { .. }]),
            "{:?}",
            small.problems
        );
        assert!(size("phi-3-mini-4k-instruct", Mode::Serve, "Standard_D8s_v3").fits());
    }

    #[test]
    fn a_big_preset_on_a_cpu_only_size_is_refused_with_needs_and_has() {
        let p = size("llama-3.3-70b-instruct", Mode::Serve, "Standard_D4s_v3");
        let text = p
            .problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        assert!(
            matches!(p.problems.as_slice(), [Problem::CpuMemory { .. }]),
            "{text}"
        );
        for needle in [
            "serving llama-3.3-70b-instruct on the CPU needs",
            "262.84 GiB of weights",
            "Standard_D4s_v3 (no GPU, 16 GiB memory) lets a pod use 12.8 GiB",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text}");
        }
        assert!(
            fitting_cpu_skus(
                preset("llama-3.3-70b-instruct"),
                Mode::Serve,
                RuntimeParams::default(),
                SkuCatalog::builtin(),
                Cloud::Azure
            )
            .is_empty()
        );
    }

    #[test]
    fn cpu_context_is_shortened_to_fit_or_checked_when_given() {
        // phi-3-mini-128k: 15.24 GiB fixed; 32 GiB x 0.8 leaves room for ~11k f32 tokens.
        let p = size("phi-3-mini-128k-instruct", Mode::Serve, "Standard_D8s_v3");
        assert!(p.fits(), "{:?}", p.problems);
        let len = p.max_model_len.expect("a context");
        assert!((MIN_SERVING_CONTEXT..131072).contains(&len), "{len}");
        assert!(p.notes.iter().any(|n| n.contains("node's memory")));
        let long = plan(
            preset("phi-3-mini-128k-instruct"),
            Mode::Serve,
            RuntimeParams {
                max_model_len: Some(65536),
            },
            &azure("Standard_D8s_v3"),
        );
        assert!(
            matches!(
                long.problems.as_slice(),
                [Problem::CpuMemory { context: 65536, .. }]
            ),
            "{:?}",
            long.problems
        );
    }

    #[test]
    fn cpu_only_sizes_cannot_tune_or_serve_without_a_known_memory() {
        let t = size("phi-3-mini-4k-instruct", Mode::TuneQlora, "Standard_E8s_v5");
        assert!(
            matches!(t.problems.as_slice(), [Problem::TuningNeedsGpu { .. }]),
            "{:?}",
            t.problems
        );
        assert!(t.problems[0].to_string().contains("needs a GPU"));
        let mut shape = azure("Standard_D4s_v3");
        shape.memory = None;
        let p = plan(
            preset("smollm2-135m-instruct"),
            Mode::Serve,
            RuntimeParams::default(),
            &shape,
        );
        assert!(
            matches!(p.problems.as_slice(), [Problem::CpuMemoryUnknown { .. }]),
            "{:?}",
            p.problems
        );
        assert!(p.problems[0].to_string().contains("add `memory`"));
    }

    #[test]
    fn cpu_sizes_that_fit_come_smallest_memory_first() {
        let names: Vec<String> = fitting_cpu_skus(
            preset("smollm2-135m-instruct"),
            Mode::Serve,
            RuntimeParams::default(),
            SkuCatalog::builtin(),
            Cloud::Azure,
        )
        .into_iter()
        .map(|(s, _)| s.name.clone())
        .collect();
        assert_eq!(names.first().map(String::as_str), Some("Standard_DS2_v2"));
        assert!(names.contains(&"Standard_D4s_v3".to_string()), "{names:?}");
        assert!(
            fitting_cpu_skus(
                preset("smollm2-135m-instruct"),
                Mode::TuneLora,
                RuntimeParams::default(),
                SkuCatalog::builtin(),
                Cloud::Azure
            )
            .is_empty()
        );
    }

    #[test]
    fn v100_gets_f16_and_a100_gets_bf16() {
        assert_eq!(
            size("mistral-7b", Mode::Serve, "Standard_NC6s_v3").dtype,
            Dtype::F16
        );
        assert_eq!(
            size("mistral-7b", Mode::Serve, "Standard_NC24ads_A100_v4").dtype,
            Dtype::Bf16
        );
        assert!(
            size("mistral-7b", Mode::Serve, "Standard_NC6s_v3")
                .notes
                .iter()
                .any(|n| n.contains("f16"))
        );
    }

    #[test]
    fn explicit_context_is_checked_against_model_limit_and_kv_room() {
        let long = plan(
            preset("phi-3-mini-4k-instruct"),
            Mode::Serve,
            RuntimeParams {
                max_model_len: Some(8192),
            },
            &azure("Standard_NC24ads_A100_v4"),
        );
        assert!(matches!(
            long.problems.as_slice(),
            [Problem::ContextTooLong { limit: 4096, .. }]
        ));
        let kv = plan(
            preset("phi-3-mini-128k-instruct"),
            Mode::Serve,
            RuntimeParams {
                max_model_len: Some(131072),
            },
            &azure("Standard_NC6s_v3"),
        );
        assert!(
            matches!(
                kv.problems.as_slice(),
                [Problem::KvCache {
                    requested: 131072,
                    ..
                }]
            ),
            "{:?}",
            kv.problems
        );
        let ok = plan(
            preset("phi-3-mini-128k-instruct"),
            Mode::Serve,
            RuntimeParams {
                max_model_len: Some(4096),
            },
            &azure("Standard_NC6s_v3"),
        );
        assert_eq!(ok.max_model_len, Some(4096));
    }

    #[test]
    fn presets_without_tuning_support_cannot_be_tuned() {
        let p = size(
            "llama-3.1-8b-instruct",
            Mode::TuneQlora,
            "Standard_NC24ads_A100_v4",
        );
        assert!(matches!(
            p.problems.as_slice(),
            [Problem::TuningNotSupported { .. }]
        ));
    }

    #[test]
    fn byo_shape_from_labels_is_sized_like_a_catalog_sku() {
        let labels = [
            (LABEL_GPU_PRODUCT, "NVIDIA-A10"),
            (LABEL_GPU_COUNT, "1"),
            (LABEL_GPU_MEMORY, "24576"),
            (LABEL_CUDA_MAJOR, "8"),
            (LABEL_CUDA_MINOR, "6"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let shape = GpuShape::from_node_labels("byo-1", &labels).expect("shape");
        let p = plan(
            preset("qwen2.5-coder-7b-instruct"),
            Mode::Serve,
            RuntimeParams::default(),
            &shape,
        );
        assert!(p.fits(), "{:?}", p.problems);
        assert_eq!(p.dtype, Dtype::Bf16);
        assert!(p.summary().contains("node byo-1"), "{}", p.summary());
    }

    #[test]
    fn every_servable_preset_fits_some_azure_size() {
        for p in PresetCatalog::builtin()
            .iter()
            .filter(|p| p.runtime_supported && p.deprecated.is_none())
        {
            assert!(
                smallest_fitting_sku(
                    p,
                    Mode::Serve,
                    RuntimeParams::default(),
                    SkuCatalog::builtin(),
                    Cloud::Azure
                )
                .is_some(),
                "{} fits no Azure size",
                p.name
            );
        }
    }

    #[test]
    fn summary_reads_as_a_sentence() {
        let p = size("phi-3-mini-4k-instruct", Mode::Serve, "Standard_NC6s_v3");
        assert_eq!(
            p.summary(),
            "Standard_NC6s_v3 (1× V100, 16 GiB): fits serving (needs 9 GiB), f16, context 4096"
        );
    }
}
