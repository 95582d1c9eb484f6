//! Byte sizes written the Kubernetes way (`7.12Gi`, `16384Mi`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

const KI: u64 = 1 << 10;
const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;
const TI: u64 = 1 << 40;

/// An amount of memory or disk, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Memory(u64);

impl Memory {
    /// A size in bytes.
    pub const fn bytes(bytes: u64) -> Self {
        Self(bytes)
    }

    /// A size in mebibytes (what GPU-feature-discovery labels use).
    pub const fn mib(mib: u64) -> Self {
        Self(mib * MI)
    }

    /// A whole number of gibibytes.
    pub const fn gib(gib: u64) -> Self {
        Self(gib * GI)
    }

    /// A fractional number of gibibytes, rounded down to a byte.
    pub fn gib_f64(gib: f64) -> Self {
        Self((gib.max(0.0) * GI as f64) as u64)
    }

    /// The size in bytes.
    pub const fn as_bytes(self) -> u64 {
        self.0
    }

    /// The size in gibibytes.
    pub fn as_gib(self) -> f64 {
        self.0 as f64 / GI as f64
    }

    /// True for zero bytes.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// Why a size string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {0:?}: write a number with a binary suffix, e.g. \"16Gi\" or \"16384Mi\"")]
pub struct ParseMemoryError(String);

impl FromStr for Memory {
    type Err = ParseMemoryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMemoryError(s.to_string());
        let t = s.trim();
        let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
            Some(i) => t.split_at(i),
            None => (t, ""),
        };
        let scale = match unit {
            "" => 1,
            "Ki" => KI,
            "Mi" => MI,
            "Gi" => GI,
            "Ti" => TI,
            _ => return Err(err()),
        };
        let value: f64 = num.parse().map_err(|_| err())?;
        if !value.is_finite() || value < 0.0 {
            return Err(err());
        }
        Ok(Self((value * scale as f64).round() as u64))
    }
}

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Memory {
    /// Writes the size in GiB the way a person reads it: `16 GiB`, `7.12 GiB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gib = self.as_gib();
        if (gib - gib.round()).abs() < 0.005 {
            write!(f, "{} GiB", gib.round() as u64)
        } else {
            let s = format!("{gib:.2}");
            write!(f, "{} GiB", s.trim_end_matches('0').trim_end_matches('.'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_suffixes_and_fractions() {
        assert_eq!("16Gi".parse::<Memory>(), Ok(Memory::gib(16)));
        assert_eq!("16384Mi".parse::<Memory>(), Ok(Memory::gib(16)));
        assert_eq!("0.5Gi".parse::<Memory>(), Ok(Memory::mib(512)));
        assert_eq!("1024".parse::<Memory>(), Ok(Memory::bytes(1024)));
        assert!("7.12Gi".parse::<Memory>().is_ok());
    }

    #[test]
    fn rejects_decimal_suffixes_negative_and_garbage() {
        for bad in ["16G", "-1Gi", "Gi", "", "1.2.3Gi", "NaNGi", "16 GiB"] {
            assert!(bad.parse::<Memory>().is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn displays_in_gib_without_noise() {
        assert_eq!(Memory::gib(16).to_string(), "16 GiB");
        assert_eq!(
            "7.12Gi".parse::<Memory>().map(|m| m.to_string()),
            Ok("7.12 GiB".into())
        );
        assert_eq!(
            "16.5Gi".parse::<Memory>().map(|m| m.to_string()),
            Ok("16.5 GiB".into())
        );
    }
}
