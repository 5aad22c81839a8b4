//! Parsing and printing the `--data` argument.

use super::DataSpec;
use anyhow::{Context, bail};
use std::fmt;
use std::path::PathBuf;

/// Training-set size of a bare `synthetic`.
pub const DEFAULT_SYNTHETIC_N: usize = 5000;

const ACCEPTED: &str =
    "accepted forms: cifar10:DIR, cifar10c:DIR, imagefolder:DIR, synthetic, synthetic:N";

impl DataSpec {
    /// Parses `cifar10:DIR`, `cifar10c:DIR`, `imagefolder:DIR`, `synthetic` or `synthetic:N`.
    ///
    /// Only the first `:` separates the kind, so directories may contain
    /// colons. Paths are not checked here: [`super::load`] reports a missing
    /// directory with the file it was looking for.
    pub fn parse(s: &str) -> anyhow::Result<DataSpec> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        match (kind, arg) {
            ("cifar10", Some(dir)) if !dir.is_empty() => Ok(DataSpec::Cifar10(PathBuf::from(dir))),
            ("imagefolder", Some(dir)) if !dir.is_empty() => {
                Ok(DataSpec::ImageFolder(PathBuf::from(dir)))
            }
            ("cifar10c", Some(dir)) if !dir.is_empty() => {
                Ok(DataSpec::Cifar10C(PathBuf::from(dir)))
            }
            ("cifar10" | "cifar10c" | "imagefolder", _) => {
                bail!("--data {s:?}: {kind} needs a directory ({ACCEPTED})")
            }
            ("synthetic", None) => Ok(DataSpec::Synthetic(DEFAULT_SYNTHETIC_N)),
            ("synthetic", Some(n)) => {
                let n: usize = n.trim().parse().with_context(|| {
                    format!("--data {s:?}: {n:?} is not a number of images ({ACCEPTED})")
                })?;
                if n == 0 {
                    bail!("--data {s:?}: synthetic needs at least one image ({ACCEPTED})");
                }
                Ok(DataSpec::Synthetic(n))
            }
            _ => bail!("--data {s:?}: unknown dataset kind {kind:?} ({ACCEPTED})"),
        }
    }
}

impl fmt::Display for DataSpec {
    /// Prints the form [`DataSpec::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Cifar10(dir) => write!(f, "cifar10:{}", dir.display()),
            DataSpec::ImageFolder(dir) => write!(f, "imagefolder:{}", dir.display()),
            DataSpec::Cifar10C(dir) => write!(f, "cifar10c:{}", dir.display()),
            DataSpec::Synthetic(n) => write!(f, "synthetic:{n}"),
        }
    }
}

impl std::str::FromStr for DataSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        DataSpec::parse(s)
    }
}
