//! `cardc info`: the summary of a card or a deck.

use crate::card::{Card, Kind};
use crate::deck::Deck;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// A .card or .deck file.
    pub path: PathBuf,
}

pub fn run(a: InfoArgs, json: bool) -> anyhow::Result<()> {
    // The header says what the file holds, whatever its name.
    let is_deck = crate::card::read_header(&a.path).is_ok_and(|h| h.kind == Kind::Deck)
        || (a.path.extension().and_then(|e| e.to_str()) == Some("deck")
            && crate::card::read_header(&a.path).is_err());
    if is_deck {
        let deck = Deck::load(&a.path)?;
        if json {
            super::print_json(&crate::deck::info::summary(&deck))?;
        } else {
            print!("{}", crate::deck::info::summary_text(&deck));
        }
        return Ok(());
    }
    let card = Card::load(&a.path)?;
    if json {
        super::print_json(&crate::card::summary(&card))?;
    } else {
        print!("{}", crate::card::summary_text(&card));
    }
    Ok(())
}
