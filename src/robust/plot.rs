//! The report's two figures, as SVG (labelled, for the HTML page) and PNG
//! (plain rasters for tools that want pixels): the accuracy heatmap of the
//! corruption table and the reliability diagram.

use super::table::CorruptionTable;
use image::{Rgb, RgbImage};
use std::fmt::Write;

/// A reliability diagram: per bin (mean confidence, accuracy, count).
pub type Diagram = [(f64, f64, usize)];

/// Colour of an accuracy in [0, 1]: a perceptually ordered ramp from dark
/// purple (0) through teal to yellow (1), after viridis.
pub fn ramp(v: f64) -> [u8; 3] {
    const STOPS: [[f64; 3]; 5] = [
        [68.0, 1.0, 84.0],
        [59.0, 82.0, 139.0],
        [33.0, 145.0, 140.0],
        [94.0, 201.0, 98.0],
        [253.0, 231.0, 37.0],
    ];
    let v = if v.is_finite() {
        v.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let t = v * (STOPS.len() - 1) as f64;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f64;
    std::array::from_fn(|k| (STOPS[i][k] + f * (STOPS[i + 1][k] - STOPS[i][k])).round() as u8)
}

fn hex(c: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// Text colour readable on `c`.
fn ink(c: [u8; 3]) -> &'static str {
    let l = 0.299 * c[0] as f64 + 0.587 * c[1] as f64 + 0.114 * c[2] as f64;
    if l > 140.0 { "#000" } else { "#fff" }
}

/// Escapes text for XML/HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const CELL_W: usize = 58;
const CELL_H: usize = 22;
const LEFT: usize = 150;
const TOP: usize = 44;

/// The accuracy heatmap: one row per corruption, one column per severity
/// plus the row mean, a bottom row of severity means; values in %.
pub fn heatmap_svg(t: &CorruptionTable, title: &str) -> String {
    let cols = t.severities.len() + 1;
    let rows = t.corruptions.len() + 1;
    let (w, h) = (LEFT + cols * CELL_W + 10, TOP + rows * CELL_H + 10);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\n"
    );
    let _ = writeln!(
        s,
        "<text x=\"4\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{}</text>",
        esc(title)
    );
    let mut headers: Vec<String> = t.severities.iter().map(|v| format!("s{v}")).collect();
    headers.push("mean".into());
    for (j, hd) in headers.iter().enumerate() {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{hd}</text>",
            LEFT + j * CELL_W + CELL_W / 2,
            TOP - 8
        );
    }
    let means = t.corruption_means();
    let mut grid: Vec<(String, Vec<f64>)> = t
        .corruptions
        .iter()
        .zip(&t.accuracy)
        .zip(&means)
        .map(|((c, row), &m)| {
            let mut r = row.clone();
            r.push(m);
            (c.clone(), r)
        })
        .collect();
    let mut last = t.severity_means();
    last.push(t.mean_accuracy().unwrap_or(0.0));
    grid.push(("mean".into(), last));
    for (i, (name, row)) in grid.iter().enumerate() {
        let y = TOP + i * CELL_H;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            LEFT - 6,
            y + CELL_H / 2 + 4,
            esc(name)
        );
        for (j, &v) in row.iter().enumerate() {
            let c = ramp(v);
            let x = LEFT + j * CELL_W;
            let _ = writeln!(
                s,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"{}\" stroke=\"#fff\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{}\">{:.1}</text>",
                CELL_W,
                CELL_H,
                hex(c),
                x + CELL_W / 2,
                y + CELL_H / 2 + 4,
                ink(c),
                100.0 * v
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// The heatmap as pixels: `scale`×`scale` blocks per cell (corruptions
/// down, severities across), no labels.
pub fn heatmap_png(t: &CorruptionTable, scale: u32) -> RgbImage {
    let scale = scale.max(1);
    let (cols, rows) = (
        t.severities.len().max(1) as u32,
        t.corruptions.len().max(1) as u32,
    );
    RgbImage::from_fn(cols * scale, rows * scale, |x, y| {
        let v = t
            .accuracy
            .get((y / scale) as usize)
            .and_then(|r| r.get((x / scale) as usize))
            .copied()
            .unwrap_or(0.0);
        Rgb(ramp(v))
    })
}

const PLOT: f64 = 260.0;
const PAD: f64 = 40.0;

/// The reliability diagram: accuracy per confidence bin as bars against
/// the diagonal of perfect calibration, one series per `(name, diagram,
/// ece)`, overlaid.
pub fn reliability_svg(series: &[(&str, &Diagram, Option<f64>)], title: &str) -> String {
    let size = PLOT + 2.0 * PAD;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{size}\" height=\"{}\" viewBox=\"0 0 {size} {}\" font-family=\"sans-serif\" font-size=\"11\">\n",
        size + 20.0,
        size + 20.0
    );
    let _ = writeln!(
        s,
        "<text x=\"4\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{}</text>",
        esc(title)
    );
    let (x0, y0) = (PAD, PAD + PLOT);
    let px = |v: f64| x0 + v * PLOT;
    let py = |v: f64| y0 - v * PLOT;
    let colors = ["#3b528b", "#f28e2b", "#21918c", "#b5179e"];
    for (k, (name, diag, ece)) in series.iter().enumerate() {
        let col = colors[k % colors.len()];
        let bins = diag.len().max(1) as f64;
        for (b, &(_, acc, n)) in diag.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let (lo, hi) = (b as f64 / bins, (b + 1) as f64 / bins);
            let _ = writeln!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{col}\" fill-opacity=\"0.45\" stroke=\"{col}\"><title>{} bin {:.2}-{:.2}: accuracy {:.3}, {n} images</title></rect>",
                px(lo),
                py(acc),
                (hi - lo) * PLOT,
                acc * PLOT,
                esc(name),
                lo,
                hi,
                acc
            );
        }
        let label = match ece {
            Some(e) => format!("{name} (ECE {e:.4})"),
            None => name.to_string(),
        };
        let ly = PAD + 14.0 + 16.0 * k as f64;
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{col}\" fill-opacity=\"0.6\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            x0 + 6.0,
            ly - 9.0,
            x0 + 20.0,
            ly,
            esc(&label)
        );
    }
    let _ = writeln!(
        s,
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\" stroke-dasharray=\"4 3\"/>",
        px(0.0),
        py(0.0),
        px(1.0),
        py(1.0)
    );
    let _ = writeln!(
        s,
        "<rect x=\"{x0}\" y=\"{PAD}\" width=\"{PLOT}\" height=\"{PLOT}\" fill=\"none\" stroke=\"#000\"/>"
    );
    for t in [0.0, 0.5, 1.0] {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{t}</text>",
            px(t),
            y0 + 14.0,
            x0 - 4.0,
            py(t) + 4.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">confidence</text><text x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">accuracy</text>",
        x0 + PLOT / 2.0,
        y0 + 30.0,
        PAD + PLOT / 2.0,
        PAD + PLOT / 2.0
    );
    s.push_str("</svg>\n");
    s
}

/// The reliability diagram as pixels (`size`×`size`): bars of the first
/// series in blue, the second's outlines in orange, the diagonal in grey.
pub fn reliability_png(series: &[&Diagram], size: u32) -> RgbImage {
    let size = size.max(16);
    let mut img = RgbImage::from_pixel(size, size, Rgb([255, 255, 255]));
    let fill = [[59, 82, 139], [242, 142, 43]];
    let sz = size as f64;
    for (k, diag) in series.iter().enumerate().take(2) {
        let bins = diag.len().max(1) as f64;
        for (b, &(_, acc, n)) in diag.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let x_lo = (b as f64 / bins * sz) as u32;
            let x_hi = (((b + 1) as f64 / bins * sz) as u32).min(size);
            let top = ((1.0 - acc.clamp(0.0, 1.0)) * (sz - 1.0)) as u32;
            for x in x_lo..x_hi {
                for y in top..size {
                    let edge = x == x_lo || x + 1 == x_hi || y == top;
                    if k == 0 || edge {
                        img.put_pixel(x, y, Rgb(fill[k]));
                    }
                }
            }
        }
    }
    for i in 0..size {
        img.put_pixel(i, size - 1 - i, Rgb([128, 128, 128]));
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_is_ordered_and_bounded() {
        assert_eq!(ramp(0.0), [68, 1, 84]);
        assert_eq!(ramp(1.0), [253, 231, 37]);
        assert_eq!(ramp(7.0), ramp(1.0));
        assert_eq!(ramp(f64::NAN), ramp(0.0));
        assert!(ramp(0.6)[1] > ramp(0.3)[1]);
    }

    #[test]
    fn heatmap_has_one_rect_per_cell_and_escapes_names() {
        let mut t = CorruptionTable::new(&["a<b", "c"], &[1, 2, 3]);
        t.accuracy = vec![vec![0.9, 0.5, 0.1], vec![0.2, 0.3, 0.4]];
        let svg = heatmap_svg(&t, "m & n");
        // (2 rows + mean row) × (3 severities + mean column).
        assert_eq!(svg.matches("<rect").count(), 12);
        assert!(svg.contains("a&lt;b") && svg.contains("m &amp; n"));
        assert!(svg.contains(">90.0<") && svg.contains(">40.0<"));
        let png = heatmap_png(&t, 4);
        assert_eq!(png.dimensions(), (12, 8));
        assert_eq!(png.get_pixel(0, 0).0, ramp(0.9));
        assert_eq!(png.get_pixel(11, 7).0, ramp(0.4));
    }
}
