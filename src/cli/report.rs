//! `cardc report DIR`: rewrites `DIR/report.html` (self-contained) and
//! `DIR/report.md` from the `eval.json` files that `cardc eval --report`
//! wrote into DIR and its subdirectories (see [`crate::robust::report`]).

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// A directory written by `cardc eval --report DIR` (or holding several such directories).
    pub dir: PathBuf,
}

pub fn run(a: ReportArgs, json: bool) -> anyhow::Result<()> {
    let (html, md, n) = crate::robust::report::regenerate(&a.dir)?;
    eprintln!(
        "{} evaluation(s): {} and {}",
        n,
        html.display(),
        md.display()
    );
    if json {
        super::print_json(&serde_json::json!({
            "html": html.display().to_string(),
            "markdown": md.display().to_string(),
            "evaluations": n,
        }))?;
    }
    Ok(())
}
