//! Building a compiled artifact, running it on its target (natively or
//! under QEMU) and comparing its logits with the reference forward pass.

use super::Report;
use super::emit_c;
use super::object_cache;
use super::target::{self, Target};
use crate::card::Card;
use crate::data::Dataset;
use crate::deck::Deck;
use crate::tensor::Tensor;
use anyhow::{Context, bail};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// File in the artifact directory holding the command that built `model`.
pub const BUILD_STAMP: &str = "build.cmd";

/// The report and target of an artifact directory.
pub fn open(dir: &Path) -> anyhow::Result<(Report, Target)> {
    let p = dir.join("report.json");
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "{}: not a compiled artifact (cannot read {})",
            dir.display(),
            p.display()
        )
    })?;
    let report: Report =
        serde_json::from_str(&text).with_context(|| format!("{}: damaged", p.display()))?;
    let (t, _) = target::find(&report.target).with_context(|| format!("{}", p.display()))?;
    Ok((report, t))
}

fn missing_tools_error(t: &Target, missing: &[String]) -> anyhow::Error {
    anyhow::anyhow!(
        "target {} needs {} (Debian packages: {})",
        t.name,
        missing.join(", "),
        if t.packages.is_empty() {
            "a C compiler".to_string()
        } else {
            t.packages.join(" ")
        }
    )
}

/// Builds `dir/model` unless it exists and was built with the same
/// command. `extra_cflags` (e.g. sanitizers) join the target's flags.
/// The kernels are compiled through the object cache named in
/// [`object_cache::ENV`] when it is set.
pub fn build(dir: &Path, extra_cflags: &[String]) -> anyhow::Result<PathBuf> {
    build_with(dir, extra_cflags, object_cache::dir_from_env().as_deref())
}

/// [`build`], with the model-independent sources compiled once into
/// `cache` and linked from there (see [`object_cache`]); `None` compiles
/// every source in one command, as the artifact's Makefile does.
pub fn build_with(
    dir: &Path,
    extra_cflags: &[String],
    cache: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let (report, t) = open(dir)?;
    if t.is_shader() {
        bail!(
            "{}: a {} shader artifact has nothing to build; `cardc run` executes it through wgpu",
            dir.display(),
            t.name
        );
    }
    // A built artifact runs where its compiler is missing: look for the
    // compiler only when something must be compiled.
    let have_cc = target::have_tool(&t.cc);
    let mut sources = emit_c::all_sources(&t, &report.sources);
    if let (Some(cache), true) = (cache, have_cc) {
        let cflags: Vec<String> = t.cflags.iter().chain(extra_cflags).cloned().collect();
        sources = object_cache::substitute(cache, dir, &t.cc, &cflags, &sources)?;
    }
    let cmd = emit_c::build_command(&t, &sources, extra_cflags);
    let stamp = dir.join(BUILD_STAMP);
    let bin = dir.join("model");
    let line = cmd.join(" ");
    if bin.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == line) {
        return Ok(bin);
    }
    if !have_cc {
        return Err(missing_tools_error(&t, std::slice::from_ref(&t.cc)));
    }
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .current_dir(dir)
        .output()
        .with_context(|| format!("cannot run {}", cmd[0]))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first: Vec<&str> = err.lines().take(5).collect();
        bail!(
            "building {} failed ({}): {}",
            dir.display(),
            line,
            first.join(" | ")
        );
    }
    std::fs::write(&stamp, &line).with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(bin)
}

/// What an artifact printed for a set of images.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// `images × classes` logits (a deck: mean probabilities).
    pub logits: Vec<f32>,
    /// Median single-image latency of `cardc_infer`, ms.
    pub median_ms: f64,
    /// A deck: median latency of its gate alone, ms.
    pub gate_median_ms: Option<f64>,
    /// A deck: median latency of one member card (the first chosen), ms.
    pub member_median_ms: Option<f64>,
    /// A deck: per image, the members its gate chose (ascending).
    pub picks: Vec<Vec<usize>>,
}

/// Runs the built artifact on `images` (raw bytes, back to back).
pub fn execute(dir: &Path, images: &[u8]) -> anyhow::Result<Output> {
    let (report, t) = open(dir)?;
    if t.is_shader() {
        return super::shader::run::execute(dir, images);
    }
    // The runner and the tools it starts (QEMU behind a shell wrapper).
    let missing: Vec<String> = t
        .runner
        .first()
        .into_iter()
        .chain(&t.tools)
        .filter(|r| !target::have_tool(r))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(missing_tools_error(&t, &missing));
    }
    // The runner may see only the artifact directory (QEMU): inputs go there.
    let input = dir.join(format!("inputs-{}.bin", std::process::id()));
    std::fs::write(&input, images).with_context(|| format!("cannot write {}", input.display()))?;
    let result = run_model(dir, &t, &input);
    let _ = std::fs::remove_file(&input);
    let text = result?;
    let n = images.len() / report.input_bytes.max(1) as usize;
    parse_output(dir, &text, report.classes, n)
}

/// Parses the harness's lines: one row of `classes` values per image,
/// `# picks M...` after each row of a deck, and `# median_ms X`,
/// `# gate_median_ms X`, `# member_median_ms X` at the end.
fn parse_output(dir: &Path, text: &str, classes: usize, n: usize) -> anyhow::Result<Output> {
    let mut out = Output {
        median_ms: f64::NAN,
        ..Output::default()
    };
    let number = |v: &str| v.trim().parse::<f64>().unwrap_or(f64::NAN);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
            match key {
                "median_ms" => out.median_ms = number(value),
                "gate_median_ms" => out.gate_median_ms = Some(number(value)),
                "member_median_ms" => out.member_median_ms = Some(number(value)),
                "picks" => out.picks.push(
                    value
                        .split_whitespace()
                        .map(|m| m.parse::<usize>())
                        .collect::<Result<_, _>>()
                        .with_context(|| format!("{}/model printed '{line}'", dir.display()))?,
                ),
                _ => {}
            }
            continue;
        }
        let row: Vec<f32> = line
            .split_whitespace()
            .map(|v| v.parse::<f32>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}/model printed '{line}'", dir.display()))?;
        if row.len() != classes {
            bail!(
                "{}/model printed {} logits, expected {classes}",
                dir.display(),
                row.len()
            );
        }
        out.logits.extend(row);
    }
    if out.logits.len() != n * classes {
        bail!(
            "{}/model printed {} rows for {n} images",
            dir.display(),
            out.logits.len() / classes.max(1)
        );
    }
    if !out.picks.is_empty() && out.picks.len() != n {
        bail!(
            "{}/model printed gate picks for {} of {n} images",
            dir.display(),
            out.picks.len()
        );
    }
    Ok(out)
}

/// Runs `dir/model` (through the target's runner) on one input file and
/// returns its standard output.
fn run_model(dir: &Path, t: &Target, input: &Path) -> anyhow::Result<String> {
    let mut cmd = match t.runner.split_first() {
        Some((r, rest)) => {
            let mut c = Command::new(r);
            c.args(rest).arg("./model");
            c
        }
        None => Command::new("./model"),
    };
    let out = cmd
        .arg(input.file_name().unwrap_or(input.as_os_str()))
        .current_dir(dir)
        .output()
        .with_context(|| format!("cannot run {}/model", dir.display()))?;
    if !out.status.success() {
        bail!(
            "{}/model failed ({}): {}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Agreement of an artifact with the reference forward pass.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub target: String,
    pub images: usize,
    /// Accuracy of the artifact's argmax against the labels.
    pub accuracy: f64,
    /// Accuracy of the reference forward pass on the same images.
    pub reference_accuracy: f64,
    pub argmax_agreement: f64,
    pub max_abs_logit_error: f64,
    /// Median single-image latency of `cardc_infer` on the target (under
    /// QEMU: emulated time, not the device's).
    pub latency_ms: f64,
    pub flash_bytes: u64,
    pub arena_bytes: u64,
    /// A deck: share of images whose gate picks equal the reference gate's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_agreement: Option<f64>,
    /// A deck: median latency of the gate alone on the target, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_latency_ms: Option<f64>,
    /// A deck: median latency of one member card on the target, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_latency_ms: Option<f64>,
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Reference logits of `card` for the dataset's images (`[n × classes]`).
pub fn reference_logits(card: &Card, ds: &Dataset) -> anyhow::Result<Vec<f32>> {
    let [c, h, w] = card.model.graph.input_shape();
    let mut out = Vec::new();
    let per = ds.image_len();
    for start in (0..ds.len()).step_by(256) {
        let end = (start + 256).min(ds.len());
        let mut x = vec![0f32; (end - start) * per];
        for (i, dst) in (start..end).zip(x.chunks_mut(per)) {
            card.normalization.apply_into(ds.image(i), dst);
        }
        let t = Tensor::from_vec(&[end - start, c, h, w], x);
        out.extend(crate::backend::cpu::infer(&card.model, &t)?.data);
    }
    Ok(out)
}

/// What an artifact directory was compiled from (stored beside it).
enum Source {
    Card(Box<Card>),
    Deck(Box<Deck>),
}

impl Source {
    fn load(dir: &Path) -> anyhow::Result<Source> {
        let deck = dir.join(super::deck::DECK_FILE);
        if deck.is_file() {
            return Ok(Source::Deck(Box::new(Deck::load(&deck)?)));
        }
        Ok(Source::Card(Box::new(Card::load(&dir.join("model.card"))?)))
    }

    fn input_shape(&self) -> [usize; 3] {
        match self {
            Source::Card(c) => c.model.graph.input_shape(),
            Source::Deck(d) => d.input_shape(),
        }
    }

    /// Reference outputs (`[n × classes]`) and, for a deck, its gate's
    /// picks. The artifact gates each image alone, so a `batch`-scope deck
    /// is compared per input.
    fn reference(&self, ds: &Dataset) -> anyhow::Result<(Vec<f32>, Vec<Vec<usize>>)> {
        match self {
            Source::Card(c) => Ok((reference_logits(c, ds)?, Vec::new())),
            Source::Deck(d) => {
                let mut d = d.as_ref().clone();
                d.gate.scope = crate::deck::Scope::Input;
                let mut backend = crate::backend::CpuBackend;
                let (mut probs, mut picks) = (Vec::new(), Vec::new());
                for start in (0..ds.len()).step_by(256) {
                    let idx: Vec<usize> = (start..(start + 256).min(ds.len())).collect();
                    let o = d.run_batch(&mut backend, ds, &idx)?;
                    probs.extend(o.probabilities);
                    picks.extend(o.chosen);
                }
                Ok((probs, picks))
            }
        }
    }
}

/// Builds (if needed) and runs the artifact in `dir` on `ds`, comparing
/// with the reference forward pass of the card (or deck) stored beside it.
pub fn evaluate(dir: &Path, ds: &Dataset) -> anyhow::Result<RunResult> {
    let (report, t) = open(dir)?;
    let source = Source::load(dir)?;
    let [c, h, w] = source.input_shape();
    if [c, h, w] != [ds.channels, ds.height, ds.width] {
        bail!(
            "{} takes {c}x{h}x{w} images but {} has {}x{}x{}",
            dir.display(),
            ds.source,
            ds.channels,
            ds.height,
            ds.width
        );
    }
    if ds.is_empty() {
        bail!("{} has no images", ds.source);
    }
    if !t.is_shader() {
        build(dir, &[])?;
    }
    let out = execute(dir, &ds.images)?;
    let (reference, ref_picks) = source.reference(ds)?;
    let k = report.classes;
    let (mut agree, mut correct, mut ref_correct, mut max_err) = (0usize, 0usize, 0usize, 0f64);
    for (i, (a, r)) in out.logits.chunks(k).zip(reference.chunks(k)).enumerate() {
        let (pa, pr) = (argmax(a), argmax(r));
        agree += usize::from(pa == pr);
        correct += usize::from(pa == ds.labels[i] as usize);
        ref_correct += usize::from(pr == ds.labels[i] as usize);
        for (x, y) in a.iter().zip(r) {
            max_err = max_err.max((x - y).abs() as f64);
        }
    }
    let n = ds.len() as f64;
    // Harnesses without the deck timing (bare metal) print no picks.
    let gate_agreement = (!ref_picks.is_empty() && !out.picks.is_empty()).then(|| {
        let same = out
            .picks
            .iter()
            .zip(&ref_picks)
            .filter(|(a, b)| a == b)
            .count();
        same as f64 / n
    });
    Ok(RunResult {
        target: t.name,
        images: ds.len(),
        accuracy: correct as f64 / n,
        reference_accuracy: ref_correct as f64 / n,
        argmax_agreement: agree as f64 / n,
        max_abs_logit_error: max_err,
        latency_ms: out.median_ms,
        flash_bytes: report.flash_bytes,
        arena_bytes: report.arena_bytes,
        gate_agreement,
        gate_latency_ms: out.gate_median_ms,
        member_latency_ms: out.member_median_ms,
    })
}
