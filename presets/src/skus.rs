//! The VM size catalog (`catalog/skus.yaml`: GPU sizes, and CPU-only sizes with their memory
//! for serving small presets on a CPU) and node shapes from GPU-feature-discovery labels
//! (bring-your-own nodes).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::memory::Memory;
use crate::models::CatalogError;

const BUILTIN_SKUS: &str = include_str!("../catalog/skus.yaml");
const CATALOG_VERSION: u32 = 1;

/// GPU-feature-discovery label: GPU product name.
pub const LABEL_GPU_PRODUCT: &str = "nvidia.com/gpu.product";
/// GPU-feature-discovery label: GPUs on the node.
pub const LABEL_GPU_COUNT: &str = "nvidia.com/gpu.count";
/// GPU-feature-discovery label: memory of each GPU in MiB.
pub const LABEL_GPU_MEMORY: &str = "nvidia.com/gpu.memory";
/// GPU-feature-discovery label: CUDA compute capability, major part.
pub const LABEL_CUDA_MAJOR: &str = "nvidia.com/cuda.compute.major";
/// GPU-feature-discovery label: CUDA compute capability, minor part.
pub const LABEL_CUDA_MINOR: &str = "nvidia.com/cuda.compute.minor";

/// A cloud whose GPU sizes the catalog knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    /// Microsoft Azure (AKS).
    Azure,
    /// Amazon Web Services (EKS).
    Aws,
}

impl FromStr for Cloud {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "azure" => Ok(Self::Azure),
            "aws" => Ok(Self::Aws),
            other => Err(format!("unknown cloud {other:?}: use \"azure\" or \"aws\"")),
        }
    }
}

impl Cloud {
    /// Every cloud.
    pub const ALL: [Cloud; 2] = [Self::Azure, Self::Aws];

    /// The name `--cloud` takes and messages print.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Azure => "azure",
            Self::Aws => "aws",
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// CUDA compute capability, e.g. 8.0 for A100.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComputeCapability {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl ComputeCapability {
    /// Whether the GPU computes in bfloat16 (Ampere, compute capability 8.0, and newer).
    pub fn supports_bf16(self) -> bool {
        self.major >= 8
    }

    /// The capability without the dot, as `CUDA_COMPUTE_CAP` and the runtime image tags write
    /// it: `80` for 8.0, `75` for 7.5.
    pub fn digits(self) -> String {
        format!("{}{}", self.major, self.minor)
    }
}

impl FromStr for ComputeCapability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (major, minor) = s.split_once('.').unwrap_or((s, "0"));
        match (major.trim().parse(), minor.trim().parse()) {
            (Ok(major), Ok(minor)) => Ok(Self { major, minor }),
            _ => Err(format!(
                "invalid compute capability {s:?}: write it as \"8.0\""
            )),
        }
    }
}

impl<'de> Deserialize<'de> for ComputeCapability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ComputeCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One VM size of a cloud.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sku {
    /// The cloud's name for the size, e.g. `Standard_NC6s_v3`.
    pub name: String,
    /// GPUs per node (0 for CPU-only sizes).
    pub gpus: u32,
    /// Total GPU memory of the node.
    pub gpu_memory: Memory,
    /// The GPU model, e.g. `V100`.
    #[serde(default)]
    pub gpu_model: Option<String>,
    /// CUDA compute capability.
    #[serde(default)]
    pub compute_capability: Option<ComputeCapability>,
    /// Memory (RAM) of the node. CPU-only sizes need it to serve a preset on the CPU; a
    /// CPU-only size without it is refused with that reason.
    #[serde(default)]
    pub memory: Option<Memory>,
    /// vCPUs (only used to prefer the smaller of two otherwise equal sizes).
    #[serde(default)]
    pub vcpus: u32,
    /// Whether the node has local NVMe disks.
    #[serde(default)]
    pub nvme: bool,
}

impl Sku {
    /// The GPU shape of one node of this size.
    pub fn shape(&self) -> GpuShape {
        GpuShape {
            source: self.name.clone(),
            gpus: self.gpus,
            gpu_memory: self.gpu_memory,
            gpu_model: self.gpu_model.clone().unwrap_or_else(|| "none".into()),
            compute_capability: self.compute_capability,
            memory: self.memory,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SkuFile {
    version: u32,
    clouds: BTreeMap<Cloud, Vec<Sku>>,
}

/// The GPU sizes of every known cloud.
#[derive(Clone, Debug)]
pub struct SkuCatalog {
    clouds: BTreeMap<Cloud, Vec<Sku>>,
}

impl SkuCatalog {
    /// The catalog embedded in this build.
    pub fn builtin() -> &'static SkuCatalog {
        static BUILTIN: OnceLock<SkuCatalog> = OnceLock::new();
        BUILTIN.get_or_init(|| {
            // The embedded file is checked by this crate's tests; a bad copy cannot ship.
            Self::from_yaml(BUILTIN_SKUS).expect("the embedded SKU catalog is valid")
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
        let file: SkuFile = serde_yaml::from_str(text)?;
        if file.version != CATALOG_VERSION {
            return Err(CatalogError::Version {
                found: file.version,
                supported: CATALOG_VERSION,
            });
        }
        for (cloud, skus) in &file.clouds {
            let mut seen = std::collections::BTreeSet::new();
            for (i, s) in skus.iter().enumerate() {
                let bad = |problem: &str| CatalogError::Entry {
                    entry: format!("{cloud} #{i} ({})", s.name),
                    problem: problem.into(),
                };
                if !seen.insert(s.name.to_ascii_lowercase()) {
                    return Err(bad(
                        "name appears twice (names are compared case-insensitively)",
                    ));
                }
                if s.gpus == 0 && !s.gpu_memory.is_zero() {
                    return Err(bad("a size with 0 GPUs must have gpuMemory 0Gi"));
                }
                if s.gpus > 0 && (s.gpu_memory.is_zero() || s.compute_capability.is_none()) {
                    return Err(bad(
                        "a GPU size needs gpuMemory above 0 and a computeCapability",
                    ));
                }
                if s.memory.is_some_and(Memory::is_zero) {
                    return Err(bad(
                        "memory must be above 0Gi (or left out where it is not known)",
                    ));
                }
            }
        }
        Ok(Self {
            clouds: file.clouds,
        })
    }

    /// Looks a size up by name, ignoring case.
    pub fn get(&self, cloud: Cloud, name: &str) -> Option<&Sku> {
        self.list(cloud)
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }

    /// Every size of a cloud, in catalog order.
    pub fn list(&self, cloud: Cloud) -> &[Sku] {
        self.clouds
            .get(&cloud)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The GPU sizes of a cloud (CPU-only sizes left out).
    pub fn gpu_skus(&self, cloud: Cloud) -> impl Iterator<Item = &Sku> {
        self.list(cloud).iter().filter(|s| s.gpus > 0)
    }

    /// The CPU-only sizes of a cloud.
    pub fn cpu_skus(&self, cloud: Cloud) -> impl Iterator<Item = &Sku> {
        self.list(cloud).iter().filter(|s| s.gpus == 0)
    }
}

/// The GPUs of one node, from a catalog SKU or from a bring-your-own node's labels.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuShape {
    /// Where the shape came from: the SKU name, or `node <name>` for labels.
    pub source: String,
    /// GPUs on the node.
    pub gpus: u32,
    /// Total GPU memory of the node.
    pub gpu_memory: Memory,
    /// The GPU model or product name.
    pub gpu_model: String,
    /// CUDA compute capability, when known.
    pub compute_capability: Option<ComputeCapability>,
    /// Memory (RAM) of the node, when known (catalog sizes that give it; not from labels).
    pub memory: Option<Memory>,
}

impl GpuShape {
    /// Whether the node has no GPU: the model is served on its CPU.
    pub fn is_cpu_only(&self) -> bool {
        self.gpus == 0
    }

    /// Memory of each GPU.
    pub fn per_gpu_memory(&self) -> Memory {
        if self.gpus == 0 {
            Memory::default()
        } else {
            Memory::bytes(self.gpu_memory.as_bytes() / u64::from(self.gpus))
        }
    }

    /// Whether the node computes in bfloat16.
    pub fn supports_bf16(&self) -> bool {
        self.compute_capability
            .is_some_and(ComputeCapability::supports_bf16)
    }

    /// Reads a node's shape from its GPU-feature-discovery labels.
    pub fn from_node_labels(
        node: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Self, ShapeError> {
        let get = |key: &'static str| {
            labels
                .get(key)
                .map(String::as_str)
                .ok_or(ShapeError::MissingLabel {
                    node: node.into(),
                    label: key,
                })
        };
        let number = |key: &'static str| -> Result<u64, ShapeError> {
            let v = get(key)?;
            v.trim().parse().map_err(|_| ShapeError::BadLabel {
                node: node.into(),
                label: key,
                value: v.into(),
            })
        };
        let gpus = u32::try_from(number(LABEL_GPU_COUNT)?).map_err(|_| ShapeError::BadLabel {
            node: node.into(),
            label: LABEL_GPU_COUNT,
            value: labels.get(LABEL_GPU_COUNT).cloned().unwrap_or_default(),
        })?;
        let per_gpu = Memory::mib(number(LABEL_GPU_MEMORY)?);
        let major = number(LABEL_CUDA_MAJOR).ok();
        let minor = number(LABEL_CUDA_MINOR).ok();
        Ok(Self {
            source: format!("node {node}"),
            gpus,
            gpu_memory: Memory::bytes(per_gpu.as_bytes().saturating_mul(u64::from(gpus))),
            gpu_model: get(LABEL_GPU_PRODUCT)?.to_string(),
            compute_capability: match (major, minor) {
                (Some(major), minor) => Some(ComputeCapability {
                    major: u32::try_from(major).unwrap_or(u32::MAX),
                    minor: u32::try_from(minor.unwrap_or(0)).unwrap_or(u32::MAX),
                }),
                _ => None,
            },
            memory: None,
        })
    }

    /// The one shape shared by all `nodes`; bring-your-own nodes of one workspace must be
    /// uniform so that every replica gets the same GPUs.
    pub fn uniform(nodes: &[(String, BTreeMap<String, String>)]) -> Result<Self, ShapeError> {
        let mut shapes = nodes
            .iter()
            .map(|(name, labels)| Self::from_node_labels(name, labels));
        let first = shapes.next().ok_or(ShapeError::NoNodes)??;
        for shape in shapes {
            let shape = shape?;
            if (shape.gpus, shape.gpu_memory, &shape.gpu_model)
                != (first.gpus, first.gpu_memory, &first.gpu_model)
            {
                return Err(ShapeError::NotUniform {
                    first: first.describe(),
                    other: shape.describe(),
                });
            }
        }
        Ok(Self {
            source: format!("{} bring-your-own node(s)", nodes.len()),
            ..first
        })
    }

    /// `Standard_NC6s_v3 (1× V100, 16 GiB)`; `Standard_D4s_v3 (no GPU, 16 GiB memory)`.
    pub fn describe(&self) -> String {
        if self.gpus == 0 {
            match self.memory {
                Some(m) => format!("{} (no GPU, {m} memory)", self.source),
                None => format!("{} (no GPU)", self.source),
            }
        } else {
            format!(
                "{} ({}× {}, {})",
                self.source, self.gpus, self.gpu_model, self.gpu_memory
            )
        }
    }
}

/// Why a bring-your-own node's GPU shape could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// No node matched.
    #[error("no nodes match the workspace's label selector")]
    NoNodes,
    /// A GPU-feature-discovery label is missing.
    #[error(
        "node {node} has no label {label}: install NVIDIA GPU feature discovery (or the GPU operator) so GPU nodes are labelled"
    )]
    MissingLabel {
        /// The node.
        node: String,
        /// The missing label.
        label: &'static str,
    },
    /// A label has a value that is not a number.
    #[error("node {node} has label {label}={value:?}, which is not a whole number")]
    BadLabel {
        /// The node.
        node: String,
        /// The label.
        label: &'static str,
        /// Its value.
        value: String,
    },
    /// The selected nodes have different GPUs.
    #[error(
        "the selected nodes do not all have the same GPUs ({first} vs {other}); narrow resource.labelSelector to one kind of node"
    )]
    NotUniform {
        /// One shape.
        first: String,
        /// A different one.
        other: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn v100_labels() -> BTreeMap<String, String> {
        labels(&[
            (LABEL_GPU_PRODUCT, "Tesla-V100-PCIE-16GB"),
            (LABEL_GPU_COUNT, "1"),
            (LABEL_GPU_MEMORY, "16384"),
            (LABEL_CUDA_MAJOR, "7"),
            (LABEL_CUDA_MINOR, "0"),
        ])
    }

    #[test]
    fn lookup_ignores_case() {
        let c = SkuCatalog::builtin();
        let sku = c.get(Cloud::Azure, "standard_nc6S_V3").expect("found");
        assert_eq!(sku.name, "Standard_NC6s_v3");
        assert_eq!((sku.gpus, sku.gpu_memory), (1, Memory::gib(16)));
        assert!(c.get(Cloud::Aws, "G5.XLARGE").is_some());
        assert!(
            c.get(Cloud::Aws, "Standard_NC6s_v3").is_none(),
            "clouds are separate"
        );
    }

    #[test]
    fn per_gpu_memory_is_total_over_count() {
        let c = SkuCatalog::builtin();
        let nd = c
            .get(Cloud::Azure, "Standard_ND96asr_A100_v4")
            .expect("found")
            .shape();
        assert_eq!(nd.per_gpu_memory(), Memory::gib(40));
        let h200 = c
            .get(Cloud::Azure, "Standard_ND96isr_H200_v5")
            .expect("found")
            .shape();
        assert_eq!(h200.per_gpu_memory(), Memory::gib(141));
    }

    #[test]
    fn bf16_needs_compute_capability_8() {
        let c = SkuCatalog::builtin();
        let shape = |n| c.get(Cloud::Azure, n).expect("found").shape();
        assert!(!shape("Standard_NC6s_v3").supports_bf16(), "V100 is 7.0");
        assert!(!shape("Standard_NC4as_T4_v3").supports_bf16(), "T4 is 7.5");
        assert!(
            shape("Standard_NC24ads_A100_v4").supports_bf16(),
            "A100 is 8.0"
        );
    }

    #[test]
    fn catalog_has_every_contract_size() {
        let c = SkuCatalog::builtin();
        let azure = [
            "Standard_NV36ads_A10_v5",
            "Standard_NV72ads_A10_v5",
            "Standard_NC24ads_A100_v4",
            "Standard_NC48ads_A100_v4",
            "Standard_NC96ads_A100_v4",
            "Standard_ND96asr_A100_v4",
            "Standard_ND96amsr_A100_v4",
            "Standard_NC40ads_H100_v5",
            "Standard_NC80adis_H100_v5",
            "Standard_ND96isr_H100_v5",
            "Standard_NCC40ads_H100_v5",
            "Standard_ND96isr_H200_v5",
            "Standard_NC6s_v3",
            "Standard_NC12s_v3",
            "Standard_NC24s_v3",
            "Standard_NC24rs_v3",
            "Standard_NC4as_T4_v3",
            "Standard_NC8as_T4_v3",
            "Standard_NC16as_T4_v3",
            "Standard_NC64as_T4_v3",
        ];
        for n in azure {
            assert!(c.get(Cloud::Azure, n).is_some_and(|s| s.gpus > 0), "{n}");
        }
        for n in [
            "p4d.24xlarge",
            "p4de.24xlarge",
            "p5.48xlarge",
            "p5e.48xlarge",
            "p5en.48xlarge",
            "g6.xlarge",
            "g6.48xlarge",
            "g5.xlarge",
            "g5.12xlarge",
        ] {
            assert!(c.get(Cloud::Aws, n).is_some_and(|s| s.gpus > 0), "{n}");
        }
    }

    #[test]
    fn byo_shape_comes_from_gfd_labels() {
        let shape = GpuShape::from_node_labels("gpu-0", &v100_labels()).expect("shape");
        assert_eq!(shape.gpus, 1);
        assert_eq!(shape.gpu_memory, Memory::gib(16));
        assert_eq!(
            shape.compute_capability,
            Some(ComputeCapability { major: 7, minor: 0 })
        );
        assert!(!shape.supports_bf16());
    }

    #[test]
    fn byo_shape_names_the_missing_or_bad_label() {
        let mut l = v100_labels();
        l.remove(LABEL_GPU_MEMORY);
        let err = GpuShape::from_node_labels("gpu-0", &l)
            .expect_err("missing")
            .to_string();
        assert!(
            err.contains("gpu-0") && err.contains(LABEL_GPU_MEMORY),
            "{err}"
        );
        let mut l = v100_labels();
        l.insert(LABEL_GPU_COUNT.into(), "two".into());
        assert!(matches!(
            GpuShape::from_node_labels("n", &l),
            Err(ShapeError::BadLabel { .. })
        ));
    }

    #[test]
    fn byo_nodes_must_be_uniform() {
        let a = ("a".to_string(), v100_labels());
        let b = ("b".to_string(), v100_labels());
        assert_eq!(GpuShape::uniform(&[a.clone(), b]).map(|s| s.gpus), Ok(1));
        let mut bigger = v100_labels();
        bigger.insert(LABEL_GPU_COUNT.into(), "2".into());
        let err = GpuShape::uniform(&[a, ("c".into(), bigger)]).expect_err("differs");
        assert!(matches!(err, ShapeError::NotUniform { .. }));
        assert_eq!(GpuShape::uniform(&[]), Err(ShapeError::NoNodes));
    }

    #[test]
    fn every_builtin_cpu_only_size_gives_its_memory() {
        let c = SkuCatalog::builtin();
        for cloud in Cloud::ALL {
            assert!(c.cpu_skus(cloud).count() >= 3, "{cloud}");
            for s in c.cpu_skus(cloud) {
                assert!(s.memory.is_some_and(|m| !m.is_zero()), "{cloud} {}", s.name);
            }
        }
        let d4 = c.get(Cloud::Azure, "Standard_D4s_v3").expect("listed");
        assert_eq!(d4.memory, Some(Memory::gib(16)));
        assert!(d4.shape().is_cpu_only());
        assert_eq!(
            d4.shape().describe(),
            "Standard_D4s_v3 (no GPU, 16 GiB memory)"
        );
        assert_eq!(
            c.get(Cloud::Aws, "m5.2xlarge").and_then(|s| s.memory),
            Some(Memory::gib(32))
        );
    }

    #[test]
    fn catalog_rejects_a_zero_memory() {
        let bad =
            "version: 1\nclouds:\n  aws:\n    - {name: m, gpus: 0, gpuMemory: 0Gi, memory: 0Gi}\n";
        let err = SkuCatalog::from_yaml(bad).expect_err("bad").to_string();
        assert!(
            err.contains("aws #0 (m)") && err.contains("memory"),
            "{err}"
        );
    }

    #[test]
    fn compute_capability_digits_drop_the_dot() {
        let cc = |s: &str| s.parse::<ComputeCapability>().expect("valid").digits();
        assert_eq!(cc("7.0"), "70");
        assert_eq!(cc("7.5"), "75");
        assert_eq!(cc("8.9"), "89");
        assert_eq!(cc("9.0"), "90");
    }

    #[test]
    fn catalog_rejects_gpu_size_without_memory() {
        let bad = "version: 1\nclouds:\n  azure:\n    - {name: X, gpus: 1, gpuMemory: 0Gi, computeCapability: \"8.0\"}\n";
        let err = SkuCatalog::from_yaml(bad).expect_err("bad").to_string();
        assert!(err.contains("azure #0 (X)"), "{err}");
    }
}
