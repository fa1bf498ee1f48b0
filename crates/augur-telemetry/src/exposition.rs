//! The two text formats `/metrics` speaks. prometheus-client writes OpenMetrics
//! (with exemplars), which Prometheus asks for when exemplar storage is on; other
//! scrapers and `promtool check metrics` expect the classic Prometheus text
//! format, derived here from the same output.

use std::collections::HashMap;

/// Converts OpenMetrics text to the classic Prometheus text format: counter and
/// info families are named by their sample names (`_total`, `_info`), `# UNIT`
/// and `# EOF` lines go, and exemplars are cut from sample lines.
pub fn openmetrics_to_classic(text: &str) -> String {
    let mut renames: HashMap<&str, (String, &str)> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                match kind {
                    "counter" => {
                        renames.insert(name, (format!("{name}_total"), "counter"));
                    }
                    "info" => {
                        renames.insert(name, (format!("{name}_info"), "gauge"));
                    }
                    _ => {}
                }
            }
        }
    }
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap_or("");
            if let Some((new, kind)) = renames.get(name) {
                out.push_str(&format!("# TYPE {new} {kind}\n"));
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Some((new, _)) = renames.get(name) {
                out.push_str(&format!("# HELP {new} {help}\n"));
                continue;
            }
        }
        let sample = match line.find(" # {") {
            Some(i) if !line.starts_with('#') => &line[..i],
            _ => line,
        };
        out.push_str(sample);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_counters_info_units_and_exemplars() {
        let om = "# HELP a_jobs Jobs.\n# TYPE a_jobs counter\na_jobs_total 3\n\
                  # HELP a_build Build.\n# TYPE a_build info\na_build_info{version=\"1\"} 1\n\
                  # HELP a_wait_seconds Wait.\n# TYPE a_wait_seconds histogram\n# UNIT a_wait_seconds seconds\n\
                  a_wait_seconds_bucket{le=\"1.0\"} 2 # {trace_id=\"ab\"} 0.5\na_wait_seconds_sum 1.0\n# EOF\n";
        let classic = openmetrics_to_classic(om);
        assert_eq!(
            classic,
            "# HELP a_jobs_total Jobs.\n# TYPE a_jobs_total counter\na_jobs_total 3\n\
             # HELP a_build_info Build.\n# TYPE a_build_info gauge\na_build_info{version=\"1\"} 1\n\
             # HELP a_wait_seconds Wait.\n# TYPE a_wait_seconds histogram\n\
             a_wait_seconds_bucket{le=\"1.0\"} 2\na_wait_seconds_sum 1.0\n"
        );
    }
}
