//! The drift report as one self-contained HTML page: inline CSS, inline SVG histograms, no
//! script, nothing fetched. People would rather look than read: the dataset verdict on top,
//! then per column the reference and current distributions overlaid, with the test, score,
//! threshold and verdict beside them. `kiln drift --output html` writes it; a live-drift page
//! can serve the same.

use std::fmt::Write;

use super::histogram::Histogram;
use super::report::{ColumnDrift, DriftReport};

const REF_COLOR: &str = "#4c78a8";
const CUR_COLOR: &str = "#f58518";
const W: f64 = 360.0;
const H: f64 = 150.0;
const PAD_BOTTOM: f64 = 34.0;
const PAD_TOP: f64 = 8.0;

/// Renders the page. `reference` and `current` name the two sides (file names, windows).
pub fn render(report: &DriftReport, title: &str, reference: &str, current: &str) -> String {
    let mut s = String::with_capacity(64 * 1024);
    let verdict = if report.dataset_drift {
        "Dataset drift detected"
    } else {
        "No dataset drift"
    };
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{}</style></head><body>\n",
        esc(title),
        CSS
    );
    let _ = writeln!(
        s,
        "<header class=\"{}\"><h1>{}</h1><p class=\"verdict\">{verdict}</p>\
         <p><b>{}</b> of <b>{}</b> columns drifted ({:.1}%; the dataset drifts at {:.0}% or more).</p>\
         <p class=\"sides\"><span class=\"key ref\"></span>reference: {} ({} rows) \
         <span class=\"key cur\"></span>current: {} ({} rows)</p></header>",
        if report.dataset_drift { "drift" } else { "ok" },
        esc(title),
        report.number_of_drifted_columns,
        report.number_of_columns,
        report.share_of_drifted_columns * 100.0,
        report.drift_share * 100.0,
        esc(reference),
        report.reference_rows,
        esc(current),
        report.current_rows,
    );
    summary_table(&mut s, report);
    s.push_str("<main class=\"grid\">\n");
    for c in &report.columns {
        column_card(&mut s, c);
    }
    s.push_str("</main>\n");
    if !report.skipped.is_empty() {
        s.push_str("<section class=\"skipped\"><h2>Not compared</h2><ul>");
        for k in &report.skipped {
            let _ = write!(s, "<li><b>{}</b>: {}</li>", esc(&k.name), esc(&k.reason));
        }
        s.push_str("</ul></section>\n");
    }
    s.push_str(
        "<footer>Kiln drift report. Tests and thresholds are Evidently's DataDriftPreset \
         defaults: p-values (K-S, chi-square, Z) drift when small, distances (Wasserstein, \
         Jensen-Shannon, PSI) when large.</footer>\n</body></html>\n",
    );
    s
}

fn summary_table(s: &mut String, report: &DriftReport) {
    s.push_str(
        "<table class=\"summary\"><thead><tr><th>column</th><th>type</th><th>method</th>\
         <th>score</th><th>threshold</th><th>drift</th></tr></thead><tbody>",
    );
    for c in &report.columns {
        let _ = write!(
            s,
            "<tr class=\"{}\"><td><a href=\"#col-{}\">{}</a></td><td>{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            if c.drifted { "drift" } else { "ok" },
            anchor(&c.name),
            esc(&c.name),
            c.column_type,
            esc(c.method_name),
            score(c.score),
            c.threshold,
            if c.drifted { "yes" } else { "no" },
        );
    }
    s.push_str("</tbody></table>\n");
}

fn column_card(s: &mut String, c: &ColumnDrift) {
    let _ = write!(
        s,
        "<section class=\"card {}\" id=\"col-{}\"><h2>{}<span class=\"badge\">{}</span></h2>\
         <p class=\"meta\">{} &middot; {} = <b>{}</b> (threshold {}) &middot; {} distinct values</p>\
         <p class=\"meta\">reference {} values ({} missing) &middot; current {} values ({} missing)</p>",
        if c.drifted { "drift" } else { "ok" },
        anchor(&c.name),
        esc(&c.name),
        if c.drifted { "drift" } else { "no drift" },
        c.column_type,
        esc(c.method_name),
        score(c.score),
        c.threshold,
        c.n_unique,
        c.reference.values,
        c.reference.missing,
        c.current.values,
        c.current.missing,
    );
    if let Some(h) = &c.histogram {
        svg(s, h);
    }
    s.push_str("</section>\n");
}

/// Overlaid bars: reference behind, current in front, both translucent.
fn svg(s: &mut String, h: &Histogram) {
    let (reference, current, labels): (&[f64], &[f64], Vec<String>) = match h {
        Histogram::Bins {
            edges,
            reference,
            current,
        } => {
            let labels = match (edges.first(), edges.last()) {
                (Some(a), Some(b)) => vec![short(*a), short(*b)],
                _ => vec![],
            };
            (reference, current, labels)
        }
        Histogram::Values {
            labels,
            reference,
            current,
        } => (reference, current, labels.clone()),
    };
    let n = reference.len().max(1);
    let top = reference
        .iter()
        .chain(current)
        .copied()
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let plot_h = H - PAD_BOTTOM - PAD_TOP;
    let bw = W / n as f64;
    let _ = write!(
        s,
        "<svg viewBox=\"0 0 {W} {H}\" width=\"100%\" role=\"img\" aria-label=\"reference and current distributions\">"
    );
    // Bins: both sides over the full bin, overlaid; values: side by side.
    let side_by_side = matches!(h, Histogram::Values { .. });
    for (k, (series, color)) in [(reference, REF_COLOR), (current, CUR_COLOR)]
        .into_iter()
        .enumerate()
    {
        let (offset, width) = if side_by_side {
            (bw * (0.08 + 0.42 * k as f64), bw * 0.4)
        } else {
            (bw * 0.02, bw * 0.96)
        };
        for (i, &v) in series.iter().enumerate() {
            let bh = v / top * plot_h;
            let _ = write!(
                s,
                "<rect x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{bh:.2}\" fill=\"{color}\" \
                 fill-opacity=\"{}\"><title>{}: {:.2}%</title></rect>",
                i as f64 * bw + offset,
                PAD_TOP + plot_h - bh,
                width.max(0.5),
                if side_by_side { "0.85" } else { "0.5" },
                if k == 0 { "reference" } else { "current" },
                v * 100.0
            );
        }
    }
    let _ = write!(
        s,
        "<text x=\"2\" y=\"{:.0}\" class=\"ax\">{:.1}%</text>",
        PAD_TOP + 9.0,
        top * 100.0
    );
    let base = PAD_TOP + plot_h;
    let _ = write!(
        s,
        "<line x1=\"0\" y1=\"{base}\" x2=\"{W}\" y2=\"{base}\" stroke=\"#888\"/>"
    );
    match h {
        Histogram::Bins { .. } => {
            if let [lo, hi] = labels.as_slice() {
                let _ = write!(
                    s,
                    "<text x=\"0\" y=\"{:.0}\" class=\"ax\">{}</text>\
                     <text x=\"{W}\" y=\"{:.0}\" class=\"ax\" text-anchor=\"end\">{}</text>",
                    base + 14.0,
                    esc(lo),
                    base + 14.0,
                    esc(hi)
                );
            }
        }
        Histogram::Values { .. } => {
            for (i, l) in labels.iter().enumerate() {
                let x = i as f64 * bw + bw / 2.0;
                let text: String = l.chars().take(((bw / 6.0) as usize).max(3)).collect();
                let _ = write!(
                    s,
                    "<text x=\"{x:.1}\" y=\"{:.0}\" class=\"ax\" text-anchor=\"middle\"><title>{}</title>{}</text>",
                    base + 14.0,
                    esc(l),
                    esc(&text)
                );
            }
        }
    }
    s.push_str("</svg>");
}

fn score(x: f64) -> String {
    if x == 0.0 || (1e-3..1e4).contains(&x.abs()) {
        format!("{x:.4}")
    } else {
        format!("{x:.3e}")
    }
}

fn short(x: f64) -> String {
    if x == 0.0 || (1e-2..1e5).contains(&x.abs()) {
        format!("{x:.3}")
    } else {
        format!("{x:.2e}")
    }
}

fn anchor(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "\
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d232a}\
header{padding:20px 28px;color:#fff}header.drift{background:#b3261e}header.ok{background:#2e7d32}\
h1{margin:0 0 6px;font-size:22px}.verdict{font-size:20px;font-weight:600;margin:4px 0}\
.sides{opacity:.95}.key{display:inline-block;width:12px;height:12px;margin:0 6px 0 14px;border-radius:2px;vertical-align:-1px}\
.key.ref{background:#4c78a8}.key.cur{background:#f58518}\
table.summary{border-collapse:collapse;margin:18px 28px;background:#fff;box-shadow:0 1px 2px #0002;font-size:14px}\
table.summary th,table.summary td{padding:5px 12px;border-bottom:1px solid #e3e6ea;text-align:left}\
td.num{text-align:right;font-variant-numeric:tabular-nums}tr.drift td:last-child{color:#b3261e;font-weight:600}\
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:16px;padding:0 28px 24px}\
.card{background:#fff;border-radius:6px;padding:12px 14px;box-shadow:0 1px 2px #0002;border-top:4px solid #2e7d32}\
.card.drift{border-top-color:#b3261e}.card h2{font-size:16px;margin:0 0 4px;word-break:break-all}\
.badge{font-size:11px;margin-left:8px;padding:2px 6px;border-radius:8px;background:#e8f5e9;color:#2e7d32;vertical-align:2px}\
.card.drift .badge{background:#fdecea;color:#b3261e}.meta{font-size:12px;color:#555;margin:2px 0}\
.ax{font-size:10px;fill:#555}.skipped{padding:0 28px}footer{padding:12px 28px 28px;font-size:12px;color:#666}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::{ColumnData, Dataset, DriftOptions, drift_datasets};

    #[test]
    fn page_is_self_contained_and_escapes_names() {
        let a = Dataset::new()
            .with("x<y", ColumnData::Float((0..200).map(f64::from).collect()))
            .and_then(|d| d.with("c", ColumnData::Int((0..200).map(|i| i % 3).collect())))
            .expect("dataset");
        let b = Dataset::new()
            .with(
                "x<y",
                ColumnData::Float((0..200).map(|i| f64::from(i) + 50.0).collect()),
            )
            .and_then(|d| d.with("c", ColumnData::Int((0..200).map(|i| i % 4).collect())))
            .expect("dataset");
        let r = drift_datasets(&a, &b, &DriftOptions::default()).expect("report");
        let html = render(&r, "t", "ref.parquet", "cur.parquet");
        assert!(html.contains("x&lt;y"));
        assert!(!html.contains("x<y"));
        assert!(html.contains("<svg"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
