//! `cardc info`.

use crate::card::Card;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// A .card file.
    pub path: PathBuf,
}

pub fn run(a: InfoArgs, json: bool) -> anyhow::Result<()> {
    if a.path.extension().and_then(|e| e.to_str()) == Some("deck") {
        anyhow::bail!(
            "{}: decks are not built yet (CARD-Deck milestone)",
            a.path.display()
        );
    }
    let card = Card::load(&a.path)?;
    if json {
        super::print_json(&crate::card::summary(&card))?;
    } else {
        print!("{}", crate::card::summary_text(&card));
    }
    Ok(())
}
