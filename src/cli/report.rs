//! `cardc report` (not built yet).

pub use super::Pending as ReportArgs;

/// Fails with the milestone that brings the command.
pub fn run(_a: ReportArgs, _json: bool) -> anyhow::Result<()> {
    Err(super::pending("report"))
}
