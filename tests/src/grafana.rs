//! Reading the Grafana dashboards in `dashboards/` the way Grafana would: every
//! panel (rows included), every Prometheus target expression, the template
//! variables, and the substitution Grafana does before sending a query.

use std::path::PathBuf;

use serde_json::Value;

use crate::process::workspace_root;

/// What Grafana's interval variables become in tests: `$__rate_interval` must span
/// several 1 s scrapes, `$__range` the whole test run.
pub const RATE_INTERVAL: &str = "30s";
pub const INTERVAL: &str = "15s";
pub const RANGE: &str = "5m";

/// One target of one panel.
#[derive(Clone, Debug)]
pub struct PanelQuery {
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
    pub exemplar: bool,
}

/// A template variable and its `label_values(metric, label)` query.
#[derive(Clone, Debug)]
pub struct Variable {
    pub name: String,
    pub query: String,
}

/// `<workspace>/dashboards`.
pub fn dashboards_dir() -> PathBuf {
    workspace_root().join("dashboards")
}

/// Parses `dashboards/<file>`.
pub fn load(file: &str) -> Value {
    let path = dashboards_dir().join(file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, with the panels of rows (collapsed or not) flattened in.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every target with an `expr`, in panel order.
pub fn queries(dashboard: &Value) -> Vec<PanelQuery> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or("(untitled)").to_string();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |target| {
                    Some(PanelQuery {
                        panel: title.clone(),
                        ref_id: target["refId"].as_str().unwrap_or("?").to_string(),
                        expr: target["expr"].as_str()?.to_string(),
                        exemplar: target["exemplar"] == Value::Bool(true),
                    })
                })
        })
        .collect()
}

/// The dashboard's template variables (those of type `query`).
pub fn variables(dashboard: &Value) -> Vec<Variable> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| Variable {
            name: v["name"].as_str().unwrap_or_default().to_string(),
            query: match &v["query"] {
                Value::String(q) => q.clone(),
                other => other["query"].as_str().unwrap_or_default().to_string(),
            },
        })
        .collect()
}

/// Replaces Grafana's variables in `expr`: the interval variables by the values
/// above, and each dashboard variable (a multi-value "All" selection) by `.*`.
/// Errors on an unknown variable, and on a dashboard variable used with an
/// equality matcher (`="$x"`), which breaks as soon as "All" is selected.
pub fn substitute(expr: &str, dashboard_variables: &[String]) -> Result<String, String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let (name, consumed) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("unclosed ${{ in {expr}"))?;
                (&braced[..end], end + 2)
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        let value = match name {
            "__rate_interval" => RATE_INTERVAL,
            "__interval" => INTERVAL,
            "__range" => RANGE,
            _ if dashboard_variables.iter().any(|v| v == name) => {
                if out.ends_with("=\"") && !out.ends_with("=~\"") {
                    return Err(format!("${name} needs a regex matcher (=~) in {expr}"));
                }
                ".*"
            }
            _ => return Err(format!("unknown variable ${name} in {expr}")),
        };
        out.push_str(value);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits `label_values(metric{...}, label)` into its selector and label.
pub fn parse_label_values(query: &str) -> Option<(String, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim().to_string(), label.trim().to_string()))
}

/// Every datasource uid referenced anywhere in `value` (panels, targets,
/// variables, annotations), plus the plain-string datasource references.
pub fn datasource_uids(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    match (key.as_str(), child) {
                        ("datasource", Value::Object(ds)) => out.push(
                            ds.get("uid")
                                .and_then(Value::as_str)
                                .unwrap_or("(none)")
                                .to_string(),
                        ),
                        ("datasource", Value::String(name)) => out.push(name.clone()),
                        ("datasourceUid", Value::String(uid)) => out.push(uid.clone()),
                        _ => {}
                    }
                    walk(child, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    walk(value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_intervals_and_variables() {
        let vars = vec!["job".to_string(), "instance".to_string()];
        let expr =
            r#"rate(x{job=~"$job",instance=~"${instance}"}[$__rate_interval]) + y[$__range]"#;
        assert_eq!(
            substitute(expr, &vars).expect("substitute"),
            r#"rate(x{job=~".*",instance=~".*"}[30s]) + y[5m]"#
        );
    }

    #[test]
    fn refuses_unknown_variables_and_equality_matchers() {
        let vars = vec!["job".to_string()];
        assert!(substitute("x[$__foo]", &vars).is_err());
        assert!(substitute(r#"x{job="$job"}"#, &vars).is_err());
    }

    #[test]
    fn finds_panels_in_rows_and_their_targets() {
        let dashboard: Value = serde_json::json!({
            "panels": [
                {"type": "row", "title": "r", "panels": [
                    {"title": "p", "targets": [{"refId": "A", "expr": "up", "exemplar": true}]}
                ]},
                {"title": "q", "targets": [{"refId": "B", "expr": "x"}]}
            ]
        });
        let found = queries(&dashboard);
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].panel.as_str(), found[0].exemplar), ("p", true));
        assert_eq!(found[1].ref_id, "B");
    }

    #[test]
    fn parses_label_values() {
        assert_eq!(
            parse_label_values("label_values(augur_build_info{job=~\"$job\"}, instance)"),
            Some(("augur_build_info{job=~\"$job\"}".into(), "instance".into()))
        );
    }
}
