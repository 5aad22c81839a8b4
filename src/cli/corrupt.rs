//! `cardc corrupt`: write a CIFAR-10-C-layout corrupted copy of a dataset.

use crate::corrupt::{self, CorruptOptions, frost_texture, write::write_corrupted};
use crate::data::{self, DataSpec, Split};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CorruptArgs {
    /// Dataset: cifar10:DIR, imagefolder:DIR, synthetic[:N].
    #[arg(long, required_unless_present = "write_frost_textures")]
    pub data: Option<String>,
    /// Output directory: <corruption>.npy (uint8 [S*N, H, W, C], the chosen
    /// severities in ascending order, N images each), labels.npy (uint8),
    /// cardc-corrupt.json.
    #[arg(long, required_unless_present = "write_frost_textures")]
    pub out: Option<PathBuf>,
    /// `all` or a comma-separated list of corruption names.
    #[arg(long, default_value = "all")]
    pub corruptions: String,
    /// Severities: 1-5, 3 or 1,3,5.
    #[arg(long, default_value = "1-5")]
    pub severities: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Corrupt only the first N images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Frost photos (PNG/JPEG) to crop frost from, scaled by 0.2 like the
    /// reference; default: cardc's procedural frost textures.
    #[arg(long)]
    pub frost_dir: Option<PathBuf>,
    /// test | train
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Write cardc's procedural frost textures as PNGs into DIR and exit
    /// (to run the reference generator with the same frost).
    #[arg(long, hide = true)]
    pub write_frost_textures: Option<PathBuf>,
}

/// Runs `cardc corrupt`.
pub fn run(a: CorruptArgs, json: bool) -> anyhow::Result<()> {
    if let Some(dir) = &a.write_frost_textures {
        let files = frost_texture::write_procedural(dir)?;
        if json {
            super::print_json(&serde_json::json!({ "files": files }))?;
        } else {
            eprintln!("wrote {} frost textures to {}", files.len(), dir.display());
        }
        return Ok(());
    }
    let (Some(data_arg), Some(out)) = (&a.data, &a.out) else {
        anyhow::bail!("--data and --out are required");
    };
    let spec = DataSpec::parse(data_arg)?;
    let split = match a.split.as_str() {
        "test" => Split::Test,
        "train" => Split::Train,
        s => anyhow::bail!("--split {s:?}: expected test or train"),
    };
    let corruptions = corrupt::parse_list(&a.corruptions)?;
    let severities = corrupt::parse_severities(&a.severities)?;
    let opts = match &a.frost_dir {
        Some(dir) => CorruptOptions::with_frost_dir(dir)?,
        None => CorruptOptions::default(),
    };
    let mut ds = data::load(&spec, split)?;
    if let Some(n) = a.limit {
        if n == 0 {
            anyhow::bail!("--limit must be at least 1");
        }
        ds = ds.limit(n);
    }
    let cells = corruptions.len() * severities.len();
    let pb = ProgressBar::with_draw_target(
        Some((cells * ds.len()) as u64),
        ProgressDrawTarget::stderr(),
    );
    pb.set_style(
        ProgressStyle::with_template("corrupt [{bar:30}] {pos}/{len} images ({elapsed}<{eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let n = ds.len() as u64;
    let written = write_corrupted(&ds, out, &corruptions, &severities, a.seed, &opts, |done| {
        pb.set_position(done as u64 * n)
    });
    pb.finish_and_clear();
    let written = written?;
    if json {
        super::print_json(&written)?;
    } else {
        eprintln!(
            "wrote {} corruptions x severities {:?} of {} images ({}) to {} in {:.1} s ({:.0} images/s)",
            written.corruptions.len(),
            written.severities,
            written.images,
            ds.source,
            out.display(),
            written.seconds,
            written.images_per_second
        );
    }
    Ok(())
}
