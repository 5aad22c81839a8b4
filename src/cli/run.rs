//! `cardc run` (not built yet).

pub use super::Pending as RunArgs;

/// Fails with the milestone that brings the command.
pub fn run(_a: RunArgs, _json: bool) -> anyhow::Result<()> {
    Err(super::pending("run"))
}
