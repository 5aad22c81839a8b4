//! `cardc deck` (not built yet).

pub use super::Pending as DeckArgs;

/// Fails with the milestone that brings the command.
pub fn run(_a: DeckArgs, _json: bool) -> anyhow::Result<()> {
    Err(super::pending("deck"))
}
