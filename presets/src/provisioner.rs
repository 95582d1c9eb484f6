//! How GPU nodes come to exist: the `--provisioner` setting (`KAITO_PROVISIONER`) of the
//! webhook and the controller. One type, so the two binaries parse the same names and refuse
//! the same combinations with [`Cloud`].

use std::fmt;
use std::str::FromStr;

use crate::skus::Cloud;

/// How GPU nodes come to exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provisioner {
    /// The controller creates one AKS agent pool per workspace (Azure Resource Manager).
    Aks,
    /// The controller creates `karpenter.sh/v1` NodeClaims, one per node.
    Karpenter,
    /// The cluster admin brings the nodes; nothing is provisioned.
    Byo,
}

impl Provisioner {
    /// Every provisioner, in the order the messages list them.
    pub const ALL: [Provisioner; 3] = [Self::Aks, Self::Karpenter, Self::Byo];

    /// The name `--provisioner` takes and messages print.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Aks => "aks",
            Self::Karpenter => "karpenter",
            Self::Byo => "byo",
        }
    }

    /// Whether this provisioner works on `cloud`: `aks` creates AKS agent pools, so it needs
    /// the Azure SKU table; karpenter and byo work on both clouds.
    pub fn check_cloud(self, cloud: Cloud) -> Result<(), String> {
        match (self, cloud) {
            (Self::Aks, Cloud::Azure) | (Self::Karpenter | Self::Byo, _) => Ok(()),
            (Self::Aks, other) => Err(format!(
                "provisioner \"aks\" creates AKS agent pools and needs cloud \"azure\", not \
                 \"{other}\": set --cloud=azure (KAITO_CLOUD), or use provisioner \"karpenter\" \
                 or \"byo\" on {other}"
            )),
        }
    }
}

impl FromStr for Provisioner {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "aks" => Ok(Self::Aks),
            "karpenter" => Ok(Self::Karpenter),
            "byo" => Ok(Self::Byo),
            other => Err(format!(
                "unknown provisioner {other:?}: use \"aks\", \"karpenter\" or \"byo\""
            )),
        }
    }
}

impl fmt::Display for Provisioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_say_what_to_use() {
        for p in Provisioner::ALL {
            assert_eq!(p.to_string().parse(), Ok(p));
        }
        assert_eq!("AKS".parse(), Ok(Provisioner::Aks));
        let err = "gcp"
            .parse::<Provisioner>()
            .expect_err("gcp is no provisioner");
        assert!(err.contains("\"aks\", \"karpenter\" or \"byo\""), "{err}");
    }

    #[test]
    fn aks_needs_azure() {
        assert_eq!(Provisioner::Aks.check_cloud(Cloud::Azure), Ok(()));
        let err = Provisioner::Aks
            .check_cloud(Cloud::Aws)
            .expect_err("aks on aws");
        assert!(err.contains("--cloud=azure"), "{err}");
        for p in [Provisioner::Karpenter, Provisioner::Byo] {
            for c in Cloud::ALL {
                assert_eq!(p.check_cloud(c), Ok(()), "{p} on {c}");
            }
        }
    }
}
