//! `cardc corrupt` (not built yet).

pub use super::Pending as CorruptArgs;

/// Fails with the milestone that brings the command.
pub fn run(_a: CorruptArgs, _json: bool) -> anyhow::Result<()> {
    Err(super::pending("corrupt"))
}
