//! `cardc compile` (not built yet).

pub use super::Pending as CompileArgs;

/// Fails with the milestone that brings the command.
pub fn run(_a: CompileArgs, _json: bool) -> anyhow::Result<()> {
    Err(super::pending("compile"))
}
