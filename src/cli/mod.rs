//! The command line: argument definitions and dispatch. Each command's
//! work lives in the library module of its pipeline stage; the files here
//! only translate flags into configurations and print results.

mod bench;
mod compile;
mod corrupt;
mod deck;
mod demo;
mod eval;
mod export;
mod import;
mod info;
mod prune;
mod quantize;
mod report;
mod run;
mod train;

use clap::{Parser, Subcommand};

/// cardc: compact, robust image classifiers from training to the edge device.
#[derive(Parser, Debug)]
#[command(name = "cardc", version, about, long_about = None, args_override_self = true)]
pub struct Cli {
    /// Machine-readable JSON summary on stdout (human text goes to stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

/// Arguments of a command that a later milestone implements.
#[allow(dead_code)] // every command is built now; kept for the next milestone's
#[derive(clap::Args, Debug)]
pub struct Pending {
    /// Arguments (not interpreted yet).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The whole pipeline on the built-in synthetic dataset.
    Demo(demo::DemoArgs),
    /// Dense training of an architecture on a dataset.
    Train(train::TrainArgs),
    /// Accuracy and calibration of a card on a dataset.
    Eval(eval::EvalArgs),
    /// Architecture, parameters, sparsity per layer, bits, bytes, provenance, metrics.
    Info(info::InfoArgs),
    /// Throughput benchmarks.
    Bench(bench::BenchArgs),
    /// Pruning and binarization (ft gmp lth lrr ep biprop rigl).
    Prune(prune::PruneArgs),
    /// Post-training quantization of a card's weights to f16 or int8.
    Quantize(quantize::QuantizeArgs),
    /// Write a CIFAR-10-C-layout corrupted dataset.
    Corrupt(corrupt::CorruptArgs),
    /// Build a spectrally gated ensemble of cards.
    Deck(deck::DeckArgs),
    /// Compile a card or deck for a target.
    Compile(compile::CompileArgs),
    /// Build and run a compiled artifact, compare with the reference.
    Run(run::RunArgs),
    /// Export a card to ONNX.
    Export(export::ExportArgs),
    /// Import an ONNX model as a card.
    Import(import::ImportArgs),
    /// Self-contained report page of a card or deck.
    Report(report::ReportArgs),
}

/// Which milestone brings a command that is not built yet.
#[allow(dead_code)] // every command is built now; kept for the next milestone's
pub(crate) fn pending(name: &str) -> anyhow::Error {
    let what = match name {
        "prune" => "compression (FT, GMP, LTH, LRR, EP, BiProp, RigL)",
        "corrupt" | "report" => "robustness evaluation",
        "compile" | "run" => "the compiler and target runtimes",
        "export" | "import" => "ONNX import/export",
        _ => "a later milestone",
    };
    anyhow::anyhow!("`cardc {name}` is not built yet (it arrives with {what})")
}

/// One line, whatever the error chain holds.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// A usage error of clap (several lines: message, possible values, usage,
/// a hint) as the one line every cardc error is.
fn clap_one_line(e: &clap::Error) -> String {
    e.render()
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints `value` as JSON on stdout.
pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = e.exit_code();
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || matches!(
                    e.kind(),
                    ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                )
            {
                let _ = e.print();
            } else {
                eprintln!("cardc: error: {}", clap_one_line(&e));
            }
            return code;
        }
    };
    if let Some(n) = cli.threads {
        if n == 0 {
            eprintln!("cardc: error: --threads must be at least 1");
            return 2;
        }
        // Ignored if a pool already exists (it cannot at this point).
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    let json = cli.json;
    // Training commands checkpoint on Ctrl-C instead of dying mid-epoch.
    if matches!(cli.command, Command::Train(_) | Command::Prune(_))
        && let Err(e) = crate::interrupt::install()
    {
        eprintln!("cardc: warning: cannot catch Ctrl-C ({e}); it will stop without a checkpoint");
    }
    let result = match cli.command {
        Command::Demo(a) => demo::run(a, json),
        Command::Train(a) => train::run(a, json),
        Command::Eval(a) => eval::run(a, json),
        Command::Info(a) => info::run(a, json),
        Command::Bench(a) => bench::run(a, json),
        Command::Prune(a) => prune::run(a, json),
        Command::Quantize(a) => quantize::run(a, json),
        Command::Corrupt(a) => corrupt::run(a, json),
        Command::Deck(a) => deck::run(a, json),
        Command::Compile(a) => compile::run(a, json),
        Command::Run(a) => run::run(a, json),
        Command::Export(a) => export::run(a, json),
        Command::Import(a) => import::run(a, json),
        Command::Report(a) => report::run(a, json),
    };
    match result {
        Ok(()) => 0,
        Err(e) => match crate::interrupt::find(&e) {
            Some(stop) => {
                eprintln!("cardc: {stop}");
                crate::interrupt::EXIT_CODE
            }
            None => {
                eprintln!("cardc: error: {}", one_line(&e));
                1
            }
        },
    }
}
