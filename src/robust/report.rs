//! Report directories and pages.
//!
//! A report directory (`cardc eval --report DIR`, read by `cardc report
//! DIR`) holds, per evaluated card:
//! * `eval.json` — the [`RobustReport`] (the same JSON `eval --json` prints);
//! * `heatmap.svg`, `heatmap.png` — the accuracy heatmap of the corruption
//!   table (when there is one);
//! * `reliability.svg`, `reliability.png` — the reliability diagram
//!   (clean, and all corrupted cells pooled);
//! * `report.md` — the tables in Markdown;
//! * `report.html` — one self-contained page (figures as inline SVG) that
//!   reads without cardc.
//!
//! `cardc report DIR` collects `DIR/eval.json` and `DIR/*/eval.json` (several
//! cards' runs side by side) and rewrites `DIR/report.html` and
//! `DIR/report.md` from them.

use super::plot::{self, esc};
use super::suite::{GatePicks, RobustReport};
use super::table::describe_picks;
use anyhow::Context;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Name of the JSON file a report directory holds per card.
pub const EVAL_JSON: &str = "eval.json";

/// Largest `eval.json` read (a 15×5 table with a baseline is a few tens of KB).
const MAX_JSON_BYTES: u64 = 64 << 20;

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.2}%", 100.0 * v))
}

fn num(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.4}"))
}

/// PNG encoding of an image.
fn png_bytes(img: &image::RgbImage) -> anyhow::Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .context("encoding a PNG")?;
    Ok(out.into_inner())
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Writes one card's evaluation into `dir` (created if missing): the JSON,
/// the figures, and single-card Markdown and HTML pages. Returns the files
/// written.
pub fn write_run_dir(dir: &Path, r: &RobustReport) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--report {}: cannot create the directory", dir.display()))?;
    let mut files = Vec::new();
    let mut put = |name: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let p = dir.join(name);
        write_file(&p, bytes)?;
        files.push(p);
        Ok(())
    };
    put(EVAL_JSON, serde_json::to_string_pretty(r)?.as_bytes())?;
    if !r.corruption_table.is_empty() {
        put("heatmap.svg", heatmap(r).as_bytes())?;
        put(
            "heatmap.png",
            &png_bytes(&plot::heatmap_png(&r.corruption_table, 16))?,
        )?;
    }
    put("reliability.svg", reliability(r).as_bytes())?;
    put(
        "reliability.png",
        &png_bytes(&plot::reliability_png(
            &[&r.reliability, &r.corrupted_reliability],
            240,
        ))?,
    )?;
    let reports = [(String::new(), r.clone())];
    put("report.md", markdown(&reports).as_bytes())?;
    put("report.html", html(&reports).as_bytes())?;
    Ok(files)
}

fn read_report(path: &Path) -> anyhow::Result<RobustReport> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    anyhow::ensure!(
        len <= MAX_JSON_BYTES,
        "{}: {len} bytes is too large for an evaluation summary",
        path.display()
    );
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not an evaluation written by `cardc eval --report`",
            path.display()
        )
    })
}

/// The evaluations in a report directory: `DIR/eval.json`, then
/// `DIR/*/eval.json` in name order, each with its path relative to `dir`.
pub fn load_run_dir(dir: &Path) -> anyhow::Result<Vec<(String, RobustReport)>> {
    anyhow::ensure!(
        dir.is_dir(),
        "{}: not a directory (expected one written by `cardc eval --report`)",
        dir.display()
    );
    let mut found = Vec::new();
    let top = dir.join(EVAL_JSON);
    if top.is_file() {
        found.push((String::new(), read_report(&top)?));
    }
    let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(EVAL_JSON).is_file())
        .collect();
    subs.sort();
    for s in subs {
        let rel = s
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        found.push((rel, read_report(&s.join(EVAL_JSON))?));
    }
    anyhow::ensure!(
        !found.is_empty(),
        "{}: no {EVAL_JSON} here or in its subdirectories (write one with `cardc eval --report {}`)",
        dir.display(),
        dir.display()
    );
    Ok(found)
}

/// Rewrites `report.html` and `report.md` in `dir` from its evaluations.
/// Returns the page paths and the number of evaluations.
pub fn regenerate(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, usize)> {
    let reports = load_run_dir(dir)?;
    let (h, m) = (dir.join("report.html"), dir.join("report.md"));
    write_file(&h, html(&reports).as_bytes())?;
    write_file(&m, markdown(&reports).as_bytes())?;
    Ok((h, m, reports.len()))
}

fn heatmap(r: &RobustReport) -> String {
    plot::heatmap_svg(
        &r.corruption_table,
        &format!("{}: accuracy (%) per corruption and severity", r.model),
    )
}

fn reliability(r: &RobustReport) -> String {
    let mut series: Vec<(&str, &plot::Diagram, Option<f64>)> = Vec::new();
    if !r.reliability.is_empty() {
        series.push(("clean", &r.reliability, r.ece));
    }
    if !r.corrupted_reliability.is_empty() {
        series.push(("corrupted", &r.corrupted_reliability, r.corrupted_ece));
    }
    plot::reliability_svg(&series, &format!("{}: reliability", r.model))
}

/// The clean-set picks of a deck's gate in words (`a 60% · b 40%`).
fn clean_picks(g: &GatePicks) -> String {
    let v: Vec<f64> = g
        .members
        .iter()
        .map(|m| g.clean.get(m).copied().unwrap_or(0.0))
        .collect();
    describe_picks(&g.members, &v)
}

/// Summary rows shared by both page formats: (label, value per report).
fn summary_rows(reports: &[(String, RobustReport)]) -> Vec<(String, Vec<String>)> {
    let mut rows = vec![
        (
            "data".to_string(),
            reports.iter().map(|(_, r)| r.data.clone()).collect(),
        ),
        (
            "clean accuracy".into(),
            reports.iter().map(|(_, r)| pct(r.accuracy)).collect(),
        ),
        (
            "clean ECE".into(),
            reports.iter().map(|(_, r)| num(r.ece)).collect(),
        ),
        (
            "mean corruption accuracy".into(),
            reports
                .iter()
                .map(|(_, r)| pct(r.mean_corruption_accuracy))
                .collect(),
        ),
        (
            "corrupted ECE (pooled)".into(),
            reports.iter().map(|(_, r)| num(r.corrupted_ece)).collect(),
        ),
        (
            "mCE vs baseline".into(),
            reports
                .iter()
                .map(|(_, r)| num(r.baseline.as_ref().and_then(|b| b.mce)))
                .collect(),
        ),
    ];
    let mut specs: Vec<&String> = reports.iter().flat_map(|(_, r)| r.attacks.keys()).collect();
    specs.sort();
    specs.dedup();
    for s in specs {
        rows.push((
            format!("accuracy under {s}"),
            reports
                .iter()
                .map(|(_, r)| pct(r.attacks.get(s).copied()))
                .collect(),
        ));
    }
    rows
}

/// The Markdown page: a summary table, then per card its corruption table,
/// baseline comparison and attacks.
pub fn markdown(reports: &[(String, RobustReport)]) -> String {
    let mut s = String::from("# cardc evaluation report\n\n| |");
    for (_, r) in reports {
        let _ = write!(s, " {} |", r.model);
    }
    s += "\n|---|";
    s += &"---|".repeat(reports.len());
    s.push('\n');
    for (label, vals) in summary_rows(reports) {
        let _ = writeln!(s, "| {label} | {} |", vals.join(" | "));
    }
    for (rel, r) in reports {
        let _ = writeln!(s, "\n## {}\n", r.model);
        if !r.corruption_table.is_empty() {
            s += "Accuracy (%) per corruption and severity:\n\n";
            s += &r.corruption_table.markdown();
            let img = if rel.is_empty() {
                "heatmap.png".to_string()
            } else {
                format!("{rel}/heatmap.png")
            };
            let _ = writeln!(s, "\n![accuracy heatmap]({img})");
        }
        if let Some(g) = &r.gate_picks {
            let _ = writeln!(s, "\nDeck gate: {}.\n", g.gate);
            let _ = writeln!(
                s,
                "Clean images answered by: {}; gate {:.1} µs/image, chosen cards {:.1} µs/image.",
                clean_picks(g),
                g.gate_us_per_image,
                g.cards_us_per_image
            );
            let picks = r.corruption_table.gate_picks_markdown();
            if !picks.is_empty() {
                s += "\nCards the gate chose per cell (share of images):\n\n";
                s += &picks;
            }
        }
        if let Some(b) = &r.baseline {
            let _ = writeln!(
                s,
                "\nBaseline {}: clean {}, mean corruption accuracy {}, mCE {}, relative mCE {}\n",
                b.model,
                pct(b.accuracy),
                pct(b.mean_corruption_accuracy),
                num(b.mce),
                num(b.relative_mce)
            );
            if !b.corruption_error.is_empty() {
                s += "| corruption | CE | relative CE |\n|---|---:|---:|\n";
                for c in &r.corruption_table.corruptions {
                    let ce = b.corruption_error.get(c).copied().flatten();
                    let rce = b.relative_corruption_error.get(c).copied().flatten();
                    let _ = writeln!(s, "| {c} | {} | {} |", num(ce), num(rce));
                }
            }
        }
        if !r.attack_details.is_empty() {
            s += "\n| attack | accuracy | images | seconds |\n|---|---:|---:|---:|\n";
            for a in &r.attack_details {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.1} |",
                    a.canonical,
                    pct(Some(a.accuracy)),
                    a.images,
                    a.seconds
                );
            }
        }
    }
    s
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th:first-child,td:first-child{text-align:left}figure{display:inline-block;margin:0 2em 1em 0;vertical-align:top}";

fn html_table(head: &[String], rows: &[(String, Vec<String>)]) -> String {
    let mut s = String::from("<table><tr>");
    for h in head {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s += "</tr>\n";
    for (label, vals) in rows {
        let _ = write!(s, "<tr><td>{}</td>", esc(label));
        for v in vals {
            let _ = write!(s, "<td>{}</td>", esc(v));
        }
        s += "</tr>\n";
    }
    s + "</table>\n"
}

/// The self-contained HTML page (no external resources: figures are inline SVG).
pub fn html(reports: &[(String, RobustReport)]) -> String {
    let mut s = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>cardc evaluation report</title><style>{STYLE}</style></head><body>\n<h1>cardc evaluation report</h1>\n"
    );
    let mut head = vec![String::new()];
    head.extend(reports.iter().map(|(_, r)| r.model.clone()));
    s += &html_table(&head, &summary_rows(reports));
    for (_, r) in reports {
        let _ = writeln!(s, "<h2>{}</h2>", esc(&r.model));
        s += "<div>";
        if !r.corruption_table.is_empty() {
            let _ = write!(s, "<figure>{}</figure>", heatmap(r));
        }
        let _ = writeln!(s, "<figure>{}</figure></div>", reliability(r));
        let t = &r.corruption_table;
        if !t.is_empty() {
            let mut head = vec!["corruption".to_string()];
            head.extend(t.severities.iter().map(|v| format!("s{v} acc / ECE")));
            head.push("mean".into());
            let rows: Vec<(String, Vec<String>)> = t
                .corruptions
                .iter()
                .zip(&t.accuracy)
                .zip(&t.ece)
                .zip(t.corruption_means())
                .map(|(((c, acc), ece), m)| {
                    let mut v: Vec<String> = acc
                        .iter()
                        .zip(ece)
                        .map(|(a, e)| format!("{:.2} / {e:.3}", 100.0 * a))
                        .collect();
                    v.push(format!("{:.2}", 100.0 * m));
                    (c.clone(), v)
                })
                .collect();
            s += "<h3>Corruptions (accuracy % / ECE per cell)</h3>\n";
            s += &html_table(&head, &rows);
        }
        if let Some(g) = &r.gate_picks {
            let _ = writeln!(
                s,
                "<h3>Deck gate</h3><p>{}; clean images answered by {}; gate {:.1} µs/image, chosen cards {:.1} µs/image</p>",
                esc(&g.gate),
                esc(&clean_picks(g)),
                g.gate_us_per_image,
                g.cards_us_per_image
            );
            if !t.gate_picks.is_empty() {
                let mut head = vec!["corruption".to_string()];
                head.extend(t.severities.iter().map(|v| format!("s{v}")));
                let rows: Vec<(String, Vec<String>)> = t
                    .corruptions
                    .iter()
                    .zip(&t.gate_picks)
                    .map(|(c, row)| {
                        let cells = row
                            .iter()
                            .map(|p| describe_picks(&t.gate_members, p))
                            .collect();
                        (c.clone(), cells)
                    })
                    .collect();
                s += &html_table(&head, &rows);
            }
        }
        if let Some(b) = &r.baseline {
            let _ = writeln!(
                s,
                "<h3>Against baseline {}</h3><p>baseline clean {}, mean corruption accuracy {}; mCE {}, relative mCE {}</p>",
                esc(&b.model),
                pct(b.accuracy),
                pct(b.mean_corruption_accuracy),
                num(b.mce),
                num(b.relative_mce)
            );
            let rows: Vec<(String, Vec<String>)> = t
                .corruptions
                .iter()
                .map(|c| {
                    let ce = b.corruption_error.get(c).copied().flatten();
                    let rce = b.relative_corruption_error.get(c).copied().flatten();
                    (c.clone(), vec![num(ce), num(rce)])
                })
                .collect();
            if !rows.is_empty() {
                s += &html_table(
                    &["corruption".into(), "CE".into(), "relative CE".into()],
                    &rows,
                );
            }
        }
        if !r.attack_details.is_empty() {
            let rows: Vec<(String, Vec<String>)> = r
                .attack_details
                .iter()
                .map(|a| {
                    (
                        a.canonical.clone(),
                        vec![
                            pct(Some(a.accuracy)),
                            a.images.to_string(),
                            format!("{:.1}", a.seconds),
                        ],
                    )
                })
                .collect();
            s += "<h3>Attacks</h3>\n";
            s += &html_table(
                &[
                    "attack".into(),
                    "accuracy".into(),
                    "images".into(),
                    "seconds".into(),
                ],
                &rows,
            );
        }
        if !r.per_class.is_empty() {
            let rows: Vec<(String, Vec<String>)> = r
                .per_class
                .iter()
                .map(|c| {
                    (
                        c.class.clone(),
                        vec![pct(Some(c.accuracy)), c.images.to_string()],
                    )
                })
                .collect();
            s += "<h3>Clean accuracy per class</h3>\n";
            s += &html_table(&["class".into(), "accuracy".into(), "images".into()], &rows);
        }
    }
    s + "</body></html>\n"
}
