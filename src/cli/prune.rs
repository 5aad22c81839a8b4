//! `cardc prune` (not built yet).

pub use super::Pending as PruneArgs;

/// Fails with the milestone that brings the command.
pub fn run(_a: PruneArgs, _json: bool) -> anyhow::Result<()> {
    Err(super::pending("prune"))
}
