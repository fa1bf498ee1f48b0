//! Renderings of a [`TuneReport`]: a plain-text table and a hand-written SVG
//! plot (prediction error per predictor, mean job completion time per policy).

use std::fmt::Write;

use crate::tune::TuneReport;

/// The report as aligned text tables, with the sampling and the
/// recommendation spelled out.
pub fn render_table(report: &TuneReport) -> String {
    let mut out = String::new();
    let _ = write!(out, "{} jobs replayed", report.jobs);
    if let Some(sample) = &report.sample {
        let _ = write!(
            out,
            " (SAMPLED: {} consecutive of {}, starting at job {} by submission)",
            report.jobs, sample.total_jobs, sample.first
        );
    }
    if let Some(options) = &report.options {
        let _ = write!(
            out,
            "; workers {}, load {}, seed {}",
            options.workers, options.load, options.seed
        );
    }
    out.push_str("\n\nprediction (chronological replay, causal history)\n");
    let _ = writeln!(
        out,
        "{:<18} {:>10} {:>16} {:>14} {:>15}",
        "predictor", "within 2x", "median |log2|", "mean accuracy", "underpredicted"
    );
    for q in &report.prediction {
        let _ = writeln!(
            out,
            "{:<18} {:>9.1}% {:>16.3} {:>13.1}% {:>14.1}%",
            q.predictor,
            q.within_2x * 100.0,
            q.median_abs_log2,
            q.mean_accuracy * 100.0,
            q.underpredicted * 100.0
        );
    }
    out.push_str("\nplacement (simulated)\n");
    let _ = writeln!(
        out,
        "{:<18} {:>12} {:>14} {:>14} {:>12}",
        "policy", "mean JCT s", "median JCT s", "p99 bsld", "makespan s"
    );
    let several = several_agings(report);
    for q in &report.placement {
        let _ = writeln!(
            out,
            "{:<18} {:>12.0} {:>14.0} {:>14.1} {:>12.0}",
            q.label(several),
            q.mean_jct_s,
            q.median_jct_s,
            q.p99_bounded_slowdown,
            q.makespan_s
        );
    }
    // The best row of each policy (predictive may have one per aging rate).
    let jct = |name: &str| {
        report
            .placement
            .iter()
            .filter(|q| q.policy == name)
            .map(|q| q.mean_jct_s)
            .min_by(f64::total_cmp)
    };
    if let (Some(predictive), Some(oracle), Some(least)) =
        (jct("predictive"), jct("oracle"), jct("least-loaded"))
    {
        if oracle > 0.0 && least > 0.0 {
            let _ = writeln!(
                out,
                "\npredictive mean JCT = {:.2}x oracle, {:.2}x least-loaded",
                predictive / oracle,
                predictive / least
            );
        }
    }
    let _ = writeln!(
        out,
        "\nrecommended: policy {} (aging rate {}), predictor {} — {}",
        report.recommended.policy,
        report.recommended.config.aging_rate,
        report.recommended.predictor,
        report.recommended.reason
    );
    out
}

/// Whether the report compares `predictive` under several aging rates.
fn several_agings(report: &TuneReport) -> bool {
    report
        .placement
        .iter()
        .filter(|q| q.policy == "predictive")
        .count()
        > 1
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One horizontal bar chart: `rows` of (label, value), scaled to the largest.
fn bars(out: &mut String, x: f64, y: f64, title: &str, unit: &str, rows: &[(String, f64)]) {
    const LABEL_W: f64 = 150.0;
    const BAR_W: f64 = 230.0;
    const ROW_H: f64 = 24.0;
    let max = rows
        .iter()
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let _ = writeln!(
        out,
        r#"<text x="{x}" y="{}" font-weight="bold">{}</text>"#,
        y + 14.0,
        escape(title)
    );
    for (i, (label, value)) in rows.iter().enumerate() {
        let row_y = y + 28.0 + i as f64 * ROW_H;
        let value = if value.is_finite() { *value } else { 0.0 };
        let width = (value / max * BAR_W).max(1.0);
        let _ = writeln!(
            out,
            r#"<text x="{x}" y="{}">{}</text><rect x="{}" y="{row_y}" width="{width:.1}" height="16" fill="{}"/><text x="{}" y="{}">{} {}</text>"#,
            row_y + 12.0,
            escape(label),
            x + LABEL_W,
            if label == "model" || label.starts_with("predictive") {
                "#d95f02"
            } else {
                "#1b9e77"
            },
            x + LABEL_W + width + 6.0,
            row_y + 12.0,
            format_value(value),
            escape(unit)
        );
    }
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// The report as an SVG document: median |log2(predicted/actual)| per
/// predictor (lower is better) and mean JCT per policy.
pub fn render_svg(report: &TuneReport) -> String {
    let rows = report.prediction.len().max(report.placement.len()) as f64;
    let height = 90.0 + rows * 24.0 + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="940" height="{height:.0}" font-family="sans-serif" font-size="12">"#
    );
    out.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    out.push('\n');
    let mut title = format!("augur tune: {} jobs", report.jobs);
    if let Some(sample) = &report.sample {
        let _ = write!(title, " (sampled from {})", sample.total_jobs);
    }
    if let Some(options) = &report.options {
        let _ = write!(
            title,
            ", workers {}, load {}",
            options.workers, options.load
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">{}</text>"#,
        escape(&title)
    );
    let prediction: Vec<(String, f64)> = report
        .prediction
        .iter()
        .map(|q| (q.predictor.clone(), q.median_abs_log2))
        .collect();
    bars(
        &mut out,
        10.0,
        40.0,
        "prediction error: median |log2(pred/actual)| (lower is better)",
        "",
        &prediction,
    );
    let several = several_agings(report);
    let placement: Vec<(String, f64)> = report
        .placement
        .iter()
        .map(|q| (q.label(several), q.mean_jct_s))
        .collect();
    bars(
        &mut out,
        480.0,
        40.0,
        "mean job completion time per policy",
        "s",
        &placement,
    );
    out.push_str("</svg>\n");
    out
}
