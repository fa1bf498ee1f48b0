//! `${{ ... }}` references and the `when` condition language.
//!
//! A template is text with references `${{ params.X }}`, `${{
//! tasks.T.outputs.K }}`, `${{ item }}`, `${{ workflow.id }}` and `${{
//! workflow.name }}` (spaces inside the braces optional). `${{` always opens a
//! reference; there is no escape. Rendering is pure and never panics.
//!
//! A `when` condition is one of:
//! * `true` or `false`;
//! * `LEFT == RIGHT` or `LEFT != RIGHT`: both sides are templates, rendered,
//!   trimmed and compared as strings (the first `==`/`!=` outside a reference
//!   splits them);
//! * a single template (e.g. `${{ params.enabled }}`) that must render to
//!   `true` or `false` (trimmed); anything else is an error at run time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::outputs::OutputValue;

/// What a `${{ }}` names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Reference {
    Param(String),
    Output { task: String, key: String },
    Item,
    WorkflowId,
    WorkflowName,
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Param(x) => write!(f, "params.{x}"),
            Reference::Output { task, key } => write!(f, "tasks.{task}.outputs.{key}"),
            Reference::Item => write!(f, "item"),
            Reference::WorkflowId => write!(f, "workflow.id"),
            Reference::WorkflowName => write!(f, "workflow.name"),
        }
    }
}

/// A piece of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    Ref(Reference),
}

/// Why a template could not be parsed or rendered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("`${{{{` at byte {at} is never closed with `}}}}`")]
    Unterminated { at: usize },
    #[error("`${{{{ {0} }}}}` is not a reference; write params.X, tasks.T.outputs.K, item, workflow.id or workflow.name")]
    BadReference(String),
    #[error("`${{{{ {reference} }}}}` has no value: {reason}")]
    Unresolved { reference: String, reason: String },
    #[error("{0}")]
    Condition(String),
}

/// A name in a reference: `[A-Za-z0-9_-]+`.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn parse_reference(inner: &str) -> Result<Reference, RenderError> {
    let text = inner.trim();
    let parts: Vec<&str> = text.split('.').collect();
    let bad = || RenderError::BadReference(text.to_string());
    match parts.as_slice() {
        ["item"] => Ok(Reference::Item),
        ["workflow", "id"] => Ok(Reference::WorkflowId),
        ["workflow", "name"] => Ok(Reference::WorkflowName),
        ["params", x] if is_name(x) => Ok(Reference::Param((*x).to_string())),
        ["tasks", t, "outputs", k] if is_name(t) && is_name(k) => Ok(Reference::Output {
            task: (*t).to_string(),
            key: (*k).to_string(),
        }),
        _ => Err(bad()),
    }
}

/// Splits a template into text and references.
pub fn parse(template: &str) -> Result<Vec<Segment>, RenderError> {
    let mut out = Vec::new();
    let mut rest = template;
    let mut offset = 0;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            out.push(Segment::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 3..];
        let Some(end) = after.find("}}") else {
            return Err(RenderError::Unterminated { at: offset + start });
        };
        out.push(Segment::Ref(parse_reference(&after[..end])?));
        let consumed = start + 3 + end + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    if !rest.is_empty() {
        out.push(Segment::Text(rest.to_string()));
    }
    Ok(out)
}

/// The references a template makes.
pub fn references(template: &str) -> Result<Vec<Reference>, RenderError> {
    Ok(parse(template)?
        .into_iter()
        .filter_map(|s| match s {
            Segment::Ref(r) => Some(r),
            Segment::Text(_) => None,
        })
        .collect())
}

/// Renders with a resolver for each reference.
pub fn render_with(
    template: &str,
    mut resolve: impl FnMut(&Reference) -> Result<String, String>,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(template.len());
    for segment in parse(template)? {
        match segment {
            Segment::Text(t) => out.push_str(&t),
            Segment::Ref(r) => match resolve(&r) {
                Ok(v) => out.push_str(&v),
                Err(reason) => {
                    return Err(RenderError::Unresolved {
                        reference: r.to_string(),
                        reason,
                    })
                }
            },
        }
    }
    Ok(out)
}

/// What references resolve to.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub params: &'a BTreeMap<String, String>,
    /// Outputs per task name (a fanned-out task's values are JSON lists, one
    /// entry per instance in item order).
    pub outputs: &'a BTreeMap<String, BTreeMap<String, OutputValue>>,
    pub item: Option<&'a str>,
    pub workflow_id: &'a str,
    pub workflow_name: &'a str,
}

impl Context<'_> {
    /// The value of one reference.
    pub fn resolve(&self, reference: &Reference) -> Result<String, String> {
        match reference {
            Reference::Param(x) => self
                .params
                .get(x)
                .cloned()
                .ok_or_else(|| format!("no parameter {x:?}")),
            Reference::Output { task, key } => self
                .output(task, key)
                .map(OutputValue::render)
                .ok_or_else(|| format!("task {task:?} has no output {key:?}")),
            Reference::Item => self
                .item
                .map(str::to_string)
                .ok_or_else(|| "only a for_each task has an item".to_string()),
            Reference::WorkflowId => Ok(self.workflow_id.to_string()),
            Reference::WorkflowName => Ok(self.workflow_name.to_string()),
        }
    }

    /// One task's output, if it has it.
    pub fn output(&self, task: &str, key: &str) -> Option<&OutputValue> {
        self.outputs.get(task).and_then(|o| o.get(key))
    }
}

/// Renders a template against a context.
pub fn render(template: &str, context: &Context<'_>) -> Result<String, RenderError> {
    render_with(template, |r| context.resolve(r))
}

/// A parsed `when` condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    Literal(bool),
    Equal(String, String),
    NotEqual(String, String),
    /// A template that must render to `true` or `false`.
    Template(String),
}

/// Finds the first `==` or `!=` outside `${{ }}`.
fn find_operator(text: &str) -> Option<(usize, bool)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut inside = false;
    while i + 1 < bytes.len() {
        if !inside && bytes[i..].starts_with(b"${{") {
            inside = true;
            i += 3;
            continue;
        }
        if inside && bytes[i..].starts_with(b"}}") {
            inside = false;
            i += 2;
            continue;
        }
        if !inside && (bytes[i] == b'=' || bytes[i] == b'!') && bytes[i + 1] == b'=' {
            return Some((i, bytes[i] == b'='));
        }
        i += 1;
    }
    None
}

impl Condition {
    /// Parses a condition; its templates are checked too.
    pub fn parse(text: &str) -> Result<Condition, RenderError> {
        let trimmed = text.trim();
        match trimmed {
            "true" => return Ok(Condition::Literal(true)),
            "false" => return Ok(Condition::Literal(false)),
            _ => {}
        }
        if let Some((at, equal)) = find_operator(trimmed) {
            let left = trimmed[..at].trim().to_string();
            let right = trimmed[at + 2..].trim().to_string();
            if right.contains("==") || right.contains("!=") {
                return Err(RenderError::Condition(format!(
                    "{trimmed:?} has more than one comparison; write `A == B` or `A != B`"
                )));
            }
            parse(&left)?;
            parse(&right)?;
            return Ok(if equal {
                Condition::Equal(left, right)
            } else {
                Condition::NotEqual(left, right)
            });
        }
        let segments = parse(trimmed)?;
        if matches!(segments.as_slice(), [Segment::Ref(_)]) {
            return Ok(Condition::Template(trimmed.to_string()));
        }
        Err(RenderError::Condition(format!(
            "{trimmed:?} is not a condition; write `true`, `false`, `A == B`, `A != B` or a single `${{{{ ... }}}}` that gives true or false"
        )))
    }

    /// The templates in this condition.
    pub fn templates(&self) -> Vec<&str> {
        match self {
            Condition::Literal(_) => Vec::new(),
            Condition::Equal(a, b) | Condition::NotEqual(a, b) => vec![a, b],
            Condition::Template(t) => vec![t],
        }
    }

    /// Evaluates the condition.
    pub fn eval(&self, context: &Context<'_>) -> Result<bool, RenderError> {
        match self {
            Condition::Literal(b) => Ok(*b),
            Condition::Equal(a, b) => Ok(render(a, context)?.trim() == render(b, context)?.trim()),
            Condition::NotEqual(a, b) => {
                Ok(render(a, context)?.trim() != render(b, context)?.trim())
            }
            Condition::Template(t) => match render(t, context)?.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(RenderError::Condition(format!(
                    "{t} gave {other:?}, not true or false"
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ctx<'a>(
        params: &'a BTreeMap<String, String>,
        outputs: &'a BTreeMap<String, BTreeMap<String, OutputValue>>,
    ) -> Context<'a> {
        Context {
            params,
            outputs,
            item: Some("a.csv"),
            workflow_id: "run1",
            workflow_name: "etl",
        }
    }

    #[test]
    fn every_reference_renders() {
        let params = BTreeMap::from([("day".to_string(), "2026-12-04".to_string())]);
        let outputs = BTreeMap::from([(
            "extract".to_string(),
            BTreeMap::from([("count".to_string(), OutputValue::Text("3".to_string()))]),
        )]);
        let c = ctx(&params, &outputs);
        let got = render(
            "${{ params.day }}/${{tasks.extract.outputs.count}}/${{ item }}/${{ workflow.id }}/${{ workflow.name }}",
            &c,
        );
        assert_eq!(got, Ok("2026-12-04/3/a.csv/run1/etl".to_string()));
        assert!(matches!(
            render("${{ params.nope }}", &c),
            Err(RenderError::Unresolved { .. })
        ));
        assert!(matches!(
            render("${{ tasks.x }}", &c),
            Err(RenderError::BadReference(_))
        ));
        assert_eq!(
            render("a ${{ item", &c),
            Err(RenderError::Unterminated { at: 2 })
        );
    }

    #[test]
    fn conditions_compare_trimmed_strings() {
        let params = BTreeMap::from([
            ("mode".to_string(), "full".to_string()),
            ("on".to_string(), " true ".to_string()),
        ]);
        let outputs = BTreeMap::new();
        let c = ctx(&params, &outputs);
        let eval = |s: &str| Condition::parse(s).and_then(|x| x.eval(&c));
        assert_eq!(eval("${{ params.mode }} == full"), Ok(true));
        assert_eq!(eval("${{ params.mode }}==delta"), Ok(false));
        assert_eq!(eval("${{ params.mode }} != delta"), Ok(true));
        assert_eq!(eval(" true "), Ok(true));
        assert_eq!(eval("false"), Ok(false));
        assert_eq!(eval("${{ params.on }}"), Ok(true));
        assert!(eval("${{ params.mode }}").is_err());
        assert!(Condition::parse("full").is_err());
        assert!(Condition::parse("a == b == c").is_err());
        assert!(Condition::parse("${{ nope }} == a").is_err());
    }

    proptest! {
        #[test]
        fn rendering_never_panics(text in ".{0,200}", marks in prop::collection::vec(0usize..200, 0..6)) {
            let mut t = text;
            for m in marks {
                let at = t.char_indices().map(|(i, _)| i).nth(m).unwrap_or(t.len());
                t.insert_str(at, if m % 2 == 0 { "${{" } else { "}}" });
            }
            let params = BTreeMap::new();
            let outputs = BTreeMap::new();
            let c = ctx(&params, &outputs);
            let _ = render(&t, &c);
            let _ = Condition::parse(&t).and_then(|x| x.eval(&c));
        }
    }
}
