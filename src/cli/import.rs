//! `cardc import` (not built yet).

pub use super::Pending as ImportArgs;

/// Fails with the milestone that brings the command.
pub fn run(_a: ImportArgs, _json: bool) -> anyhow::Result<()> {
    Err(super::pending("import"))
}
