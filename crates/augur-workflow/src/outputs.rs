//! A task's outputs: small values it wrote as files in `$AUGUR_OUTPUTS`.
//!
//! A file `KEY` holds a string (one trailing newline dropped), `KEY.json` a
//! JSON value, `KEY.lines` a list with one item per non-empty line. At most
//! [`MAX_OUTPUT_BYTES`] per file and [`MAX_OUTPUT_KEYS`] keys; key names are
//! `[A-Za-z0-9_-]+`. Collecting the files is the worker's business; this
//! module only parses what it collected.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The bounds the worker collects outputs under (largest file, most files).
pub use augur_core::job::{MAX_OUTPUTS as MAX_OUTPUT_KEYS, MAX_OUTPUT_BYTES};

/// One output value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum OutputValue {
    Text(String),
    Json(serde_json::Value),
    Lines(Vec<String>),
}

/// A task instance's outputs by key.
pub type Outputs = BTreeMap<String, OutputValue>;

impl OutputValue {
    /// As substituted into a template: text as is, a JSON string as its
    /// content, other JSON compact, lines joined with newlines.
    pub fn render(&self) -> String {
        match self {
            OutputValue::Text(s) => s.clone(),
            OutputValue::Json(serde_json::Value::String(s)) => s.clone(),
            OutputValue::Json(v) => v.to_string(),
            OutputValue::Lines(lines) => lines.join("\n"),
        }
    }

    /// As `for_each` items: lines, or a JSON array (strings as they are,
    /// other values as compact JSON). Text and other JSON are not lists.
    pub fn as_list(&self) -> Option<Vec<String>> {
        match self {
            OutputValue::Lines(lines) => Some(lines.clone()),
            OutputValue::Json(serde_json::Value::Array(items)) => {
                Some(items.iter().map(json_item).collect())
            }
            OutputValue::Text(_) | OutputValue::Json(_) => None,
        }
    }

    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            OutputValue::Text(_) => "a string",
            OutputValue::Json(serde_json::Value::Array(_)) => "a JSON list",
            OutputValue::Json(_) => "a JSON value that is not a list",
            OutputValue::Lines(_) => "a list of lines",
        }
    }
}

/// A JSON list item as a `for_each` item.
pub fn json_item(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Why a task's outputs were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("output {file:?}: {reason}")]
pub struct OutputError {
    pub file: String,
    pub reason: String,
}

/// Parses the files of an outputs directory.
pub fn parse_outputs(files: &[(String, Vec<u8>)]) -> Result<Outputs, OutputError> {
    let mut out = Outputs::new();
    for (file, bytes) in files {
        let err = |reason: String| OutputError {
            file: file.clone(),
            reason,
        };
        let (key, kind) = match file.rsplit_once('.') {
            Some((k, "json")) => (k, "json"),
            Some((k, "lines")) => (k, "lines"),
            _ => (file.as_str(), "text"),
        };
        if !crate::template::is_name(key) {
            return Err(err(
                "name must be KEY, KEY.json or KEY.lines with KEY of letters, digits, '_' and '-'"
                    .to_string(),
            ));
        }
        if bytes.len() > MAX_OUTPUT_BYTES {
            return Err(err(format!(
                "is {} bytes, the limit is {MAX_OUTPUT_BYTES}",
                bytes.len()
            )));
        }
        let text = std::str::from_utf8(bytes).map_err(|e| err(format!("is not UTF-8 ({e})")))?;
        let value = match kind {
            "json" => OutputValue::Json(
                serde_json::from_str(text).map_err(|e| err(format!("is not JSON ({e})")))?,
            ),
            "lines" => OutputValue::Lines(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            _ => {
                let t = text.strip_suffix('\n').unwrap_or(text);
                OutputValue::Text(t.strip_suffix('\r').unwrap_or(t).to_string())
            }
        };
        if out.insert(key.to_string(), value).is_some() {
            return Err(err(format!("key {key:?} is written by more than one file")));
        }
        if out.len() > MAX_OUTPUT_KEYS {
            return Err(err(format!(
                "is one key too many: the limit is {MAX_OUTPUT_KEYS} keys"
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, body: &str) -> (String, Vec<u8>) {
        (name.to_string(), body.as_bytes().to_vec())
    }

    #[test]
    fn the_three_kinds_parse() {
        let out = parse_outputs(&[
            f("count", "3\n"),
            f("files.lines", "a.csv\nb.csv\n\n"),
            f("meta.json", r#"{"rows": 10}"#),
        ]);
        let out = match out {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(out.get("count"), Some(&OutputValue::Text("3".to_string())));
        assert_eq!(
            out.get("files").and_then(OutputValue::as_list),
            Some(vec!["a.csv".to_string(), "b.csv".to_string()])
        );
        assert_eq!(
            out.get("meta").map(OutputValue::render),
            Some(r#"{"rows":10}"#.to_string())
        );
        assert_eq!(out.get("count").and_then(OutputValue::as_list), None);
    }

    #[test]
    fn bad_outputs_are_refused_with_the_file_named() {
        let big = "x".repeat(MAX_OUTPUT_BYTES + 1);
        let e = parse_outputs(&[f("big", &big)]).err();
        assert!(e.is_some_and(|e| e.file == "big" && e.reason.contains("4096")));
        assert!(parse_outputs(&[f("bad name", "x")]).is_err());
        assert!(parse_outputs(&[f(".json", "1")]).is_err());
        assert!(parse_outputs(&[f("x.json", "{nope")]).is_err());
        assert!(parse_outputs(&[f("x", "1"), f("x.lines", "1")]).is_err());
        assert!(parse_outputs(&[("x".to_string(), vec![0xff, 0xfe])]).is_err());
        let many: Vec<_> = (0..17).map(|i| f(&format!("k{i}"), "v")).collect();
        assert!(parse_outputs(&many).is_err());
        assert!(parse_outputs(&many[..16]).is_ok());
    }
}
