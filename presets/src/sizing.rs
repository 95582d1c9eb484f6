//! Does a model fit a node? Pure functions from a preset, a mode, runtime parameters and a
//! node's GPU shape to a [`Plan`] that says yes or no, with every reason.
//!
//! Serving follows upstream KAITO's estimate: each GPU can use 84% of its memory; the
//! runtime reserves 2.3 GiB plus the KV cache; the weights (plus 2%) with 5% headroom must
//! fit in what is left. The runtime (mistral.rs) serves one whole copy of the model per
//! node, tensor-parallel across that node's GPUs, so a node must hold the model by itself:
//! more nodes add replicas, not memory.

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
}

impl Dtype {
    /// The runtime's name for the precision.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
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
    /// The node has no GPU.
    #[error("{node} has no GPU; choose a GPU size")]
    CpuOnly {
        /// The node's description.
        node: String,
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
    /// Memory the preset requires of the node (serving) or of each GPU (tuning).
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

/// Sizes `preset` for `mode` on one node of `shape`.
pub fn plan(preset: &Preset, mode: Mode, params: RuntimeParams, shape: &GpuShape) -> Plan {
    let dtype = if shape.supports_bf16() {
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
    if shape.gpus == 0 {
        plan.problems.push(Problem::CpuOnly { node });
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
    fn cpu_only_size_is_rejected_as_such() {
        let p = size("phi-3-mini-4k-instruct", Mode::Serve, "Standard_D4s_v3");
        assert!(
            matches!(p.problems.as_slice(), [Problem::CpuOnly { .. }]),
            "{:?}",
            p.problems
        );
        assert!(p.problems[0].to_string().contains("has no GPU"));
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
