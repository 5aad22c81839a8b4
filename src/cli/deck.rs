//! `cardc deck`: builds a CARD-Deck from cards (the work lives in
//! [`crate::deck`]).

use crate::card::Card;
use crate::data::{self, Augment, DataSpec, Split};
use crate::deck::{self, BuildConfig, GateKind, GateSettings, Metric, Scope};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct DeckArgs {
    /// The member cards (.card files), at least one.
    #[arg(long, num_args = 1.., required = true)]
    pub cards: Vec<PathBuf>,
    /// Images for the clean reference spectrum and the signatures (normally
    /// the cards' training data): cifar10:DIR, imagefolder:DIR, synthetic[:N].
    #[arg(long)]
    pub data: String,
    /// train | test: which split of --data.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Output .deck file.
    #[arg(long)]
    pub out: PathBuf,
    /// spectral (top-k cards by spectral distance) | average (all cards).
    #[arg(long, default_value = "spectral")]
    pub gate: String,
    /// Cards averaged per decision (spectral gate); default half the cards,
    /// rounded up.
    #[arg(long)]
    pub k: Option<usize>,
    /// l1 | cosine: distance between an input's deviation and a signature.
    #[arg(long, default_value = "l1")]
    pub metric: String,
    /// input (one decision per image) | batch (one per evaluation batch).
    #[arg(long, default_value = "input")]
    pub scope: String,
    /// Override a card's training augmentation, repeatable: N=SPEC with N
    /// the card's position in --cards (1 = first), e.g. 2=gaussian:0.08.
    #[arg(long)]
    pub augment_of: Vec<String>,
    /// At most this many images for the reference and each signature.
    #[arg(long, default_value_t = 2000)]
    pub limit: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Parses the `--augment-of N=SPEC` list into one optional override per card.
fn overrides(list: &[String], cards: usize) -> anyhow::Result<Vec<Option<Augment>>> {
    let mut out = vec![None; cards];
    for item in list {
        let (n, spec) = item.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("--augment-of {item:?}: expected N=SPEC, e.g. 2=gaussian:0.08")
        })?;
        let n: usize = n.trim().parse().map_err(|_| {
            anyhow::anyhow!("--augment-of {item:?}: {n:?} is not a card position (1 = first)")
        })?;
        anyhow::ensure!(
            (1..=cards).contains(&n),
            "--augment-of {item:?}: card {n} does not exist ({cards} cards given)"
        );
        out[n - 1] = Some(
            Augment::parse(spec.trim())
                .map_err(|e| anyhow::anyhow!("--augment-of {item:?}: {e:#}"))?,
        );
    }
    Ok(out)
}

/// A card's name in the deck: its file stem.
fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

pub fn run(a: DeckArgs, json: bool) -> anyhow::Result<()> {
    // Flags first: a typo should not cost loading cards or data.
    let kind = GateKind::parse(&a.gate)?;
    let metric = Metric::parse(&a.metric)?;
    let scope = Scope::parse(&a.scope)?;
    let split = match a.split.as_str() {
        "train" => Split::Train,
        "test" => Split::Test,
        s => anyhow::bail!("--split '{s}': expected train or test"),
    };
    anyhow::ensure!(a.limit >= 1, "--limit must be at least 1");
    let n = a.cards.len();
    let k = match (kind, a.k) {
        (GateKind::Average, None) => n,
        (GateKind::Average, Some(k)) => {
            anyhow::ensure!(k == n, "--k {k}: the average gate uses all {n} cards");
            n
        }
        (GateKind::Spectral, None) => n.div_ceil(2),
        (GateKind::Spectral, Some(k)) => {
            anyhow::ensure!(
                (1..=n).contains(&k),
                "--k {k}: must be between 1 and the number of cards ({n})"
            );
            k
        }
    };
    let augment_of = overrides(&a.augment_of, n)?;
    let spec = DataSpec::parse(&a.data)?;

    let mut cards = Vec::with_capacity(n);
    for p in &a.cards {
        cards.push((stem(p), Card::load(p)?));
    }
    let ds = data::load(&spec, split)?;
    let cfg = BuildConfig {
        gate: GateSettings {
            kind,
            k,
            metric,
            scope,
        },
        limit: a.limit,
        seed: a.seed,
        augment_of,
        data_name: a.data.clone(),
    };
    let t = std::time::Instant::now();
    // No progress line before the build: its refusals (a card of unknown
    // training, say) must stay the only line on stderr.
    let d = deck::build(cards, &ds, &cfg)?;
    d.save(&a.out)?;
    eprintln!(
        "deck: {n} cards, signatures from {} images of {} ({split})",
        d.provenance.images, a.data
    );
    eprint!("{}", deck::info::summary_text(&d));
    eprintln!(
        "wrote {} ({:.1} s)",
        a.out.display(),
        t.elapsed().as_secs_f64()
    );
    if json {
        let mut v = deck::info::summary(&d);
        v["out"] = serde_json::json!(a.out.display().to_string());
        v["seconds"] = serde_json::json!(t.elapsed().as_secs_f64());
        super::print_json(&v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn augment_overrides_parse_and_refuse() {
        let o = overrides(&["2=gaussian:0.08".into()], 3).unwrap();
        assert_eq!(o[0], None);
        assert_eq!(
            o[1],
            Some(Augment::Gaussian {
                sigma: 0.08,
                p: 0.5
            })
        );
        assert!(overrides(&["4=augmix".into()], 3).is_err());
        assert!(overrides(&["0=augmix".into()], 3).is_err());
        assert!(overrides(&["augmix".into()], 3).is_err());
        assert!(overrides(&["1=blur".into()], 3).is_err());
    }
}
