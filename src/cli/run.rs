//! `cardc run`: build a compiled artifact if needed, run it on its target
//! and compare with the reference forward pass.

use crate::compile::artifact;
use crate::data::{self, DataSpec, Split};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Artifact directory written by `cardc compile`.
    pub dir: PathBuf,
    /// Dataset: cifar10:DIR, imagefolder:DIR, synthetic[:N].
    #[arg(long)]
    pub data: String,
    /// train | test
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Run at most N images.
    #[arg(long)]
    pub limit: Option<usize>,
}

pub fn run(a: RunArgs, json: bool) -> anyhow::Result<()> {
    let split = match a.split.as_str() {
        "train" => Split::Train,
        "test" => Split::Test,
        s => anyhow::bail!("--split '{s}': expected train or test"),
    };
    // Fail on a bad directory before loading data.
    artifact::open(&a.dir)?;
    let spec = DataSpec::parse(&a.data)?;
    let mut ds = data::load(&spec, split)?;
    if let Some(n) = a.limit {
        ds = ds.limit(n);
    }
    let r = artifact::evaluate(&a.dir, &ds)?;
    eprintln!(
        "{} on {} ({} images, target {}): accuracy {:.2}% (reference {:.2}%), argmax agreement {:.2}%, \
         max |logit error| {:.3e}, median latency {:.3} ms",
        a.dir.display(),
        spec,
        r.images,
        r.target,
        100.0 * r.accuracy,
        100.0 * r.reference_accuracy,
        100.0 * r.argmax_agreement,
        r.max_abs_logit_error,
        r.latency_ms
    );
    if let (Some(agree), Some(gate), Some(card)) =
        (r.gate_agreement, r.gate_latency_ms, r.member_latency_ms)
    {
        eprintln!(
            "  deck: gate picks agree with the reference on {:.2}% of images; gate {:.3} ms \
             = {:.1}% of one card ({:.3} ms)",
            100.0 * agree,
            gate,
            100.0 * gate / card,
            card
        );
    }
    if json {
        super::print_json(&r)?;
    }
    Ok(())
}
