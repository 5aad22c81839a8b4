//! `cardc export` (not built yet).

pub use super::Pending as ExportArgs;

/// Fails with the milestone that brings the command.
pub fn run(_a: ExportArgs, _json: bool) -> anyhow::Result<()> {
    Err(super::pending("export"))
}
