//! The run page's drawing: a run's instances grouped by task, the tasks
//! layered by depth, laid out left to right as SVG shapes (rendered by
//! `workflow_graph.html`).

use std::collections::{BTreeMap, HashMap};

use augur_proto::v1 as pb;

use super::{counts_text, encode, rank};

/// Longest node label drawn (the whole label is the node's tooltip).
const MAX_LABEL: usize = 56;
// Geometry of the drawing, in SVG user units (pixels at scale 1).
const MARGIN: i64 = 16;
const NODE_H: i64 = 34;
const ROW_GAP: i64 = 14;
const COL_GAP: i64 = 56;
const CHAR_W: i64 = 7;
const PAD: i64 = 12;
const MIN_NODE_W: i64 = 90;

/// One task of a run with all its instances.
pub(crate) struct Group<'a> {
    pub name: String,
    pub finally: bool,
    pub fanned: bool,
    pub depends_on: Vec<String>,
    pub instances: Vec<&'a pb::WorkflowTask>,
    pub counts: BTreeMap<String, u32>,
    /// The worst state among the instances.
    pub state: String,
}

impl Group<'_> {
    /// `transform ×50: 48 succeeded, 2 failed`; `load: succeeded`.
    pub fn label(&self) -> String {
        let name = if self.finally {
            format!("{} (finally)", self.name)
        } else {
            self.name.clone()
        };
        if self.fanned {
            let counts = counts_text(self.counts.iter().map(|(k, v)| (k.as_str(), *v)));
            format!("{name} ×{}: {counts}", self.instances.len())
        } else {
            format!("{name}: {}", self.state)
        }
    }
}

/// A run's instances grouped by task, tasks in the run's order.
pub(crate) fn groups(run: &pb::WorkflowRun) -> Vec<Group<'_>> {
    let mut out: Vec<Group> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for t in &run.tasks {
        let i = *at.entry(t.name.as_str()).or_insert_with(|| {
            out.push(Group {
                name: t.name.clone(),
                finally: t.finally,
                fanned: false,
                depends_on: t.depends_on.clone(),
                instances: Vec::new(),
                counts: BTreeMap::new(),
                state: "succeeded".into(),
            });
            out.len() - 1
        });
        let g = &mut out[i];
        g.fanned |= t.fanned;
        g.instances.push(t);
        *g.counts.entry(t.state.clone()).or_default() += 1;
        if rank(&t.state) > rank(&g.state) || g.instances.len() == 1 {
            g.state = t.state.clone();
        }
    }
    out
}

/// The layer of every group: DAG tasks by depth (0 without upstream, else one
/// more than their deepest upstream task), finally tasks all in a last layer.
pub(crate) fn layers(groups: &[Group]) -> Vec<usize> {
    let mut depth: HashMap<&str, usize> = HashMap::new();
    let mut out = vec![0; groups.len()];
    for (i, g) in groups.iter().enumerate().filter(|(_, g)| !g.finally) {
        // Upstream tasks come first (the run is in topological order); a
        // name not seen (a malformed answer) does not count.
        let d = g
            .depends_on
            .iter()
            .filter_map(|u| depth.get(u.as_str()))
            .map(|d| d + 1)
            .max()
            .unwrap_or(0);
        depth.insert(g.name.as_str(), d);
        out[i] = d;
    }
    let last = groups
        .iter()
        .zip(&out)
        .filter(|(g, _)| !g.finally)
        .map(|(_, d)| d + 1)
        .max()
        .unwrap_or(0);
    for (i, g) in groups.iter().enumerate() {
        if g.finally {
            out[i] = last;
        }
    }
    out
}

pub(crate) struct Node {
    pub name: String,
    /// `node STATE`, plus `finally` for a finally task.
    pub class: String,
    pub label: String,
    pub title: String,
    pub href: String,
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
    pub text_x: i64,
    pub text_y: i64,
}

pub(crate) struct Edge {
    pub from: String,
    pub to: String,
    /// The path's `d`.
    pub d: String,
}

#[derive(Default)]
pub(crate) struct Dag {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub width: i64,
    pub height: i64,
    /// How the graph reads aloud.
    pub summary: String,
}

pub(super) fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// The DAG laid out left to right, a column per layer.
pub(crate) fn dag(groups: &[Group]) -> Dag {
    let layer = layers(groups);
    let columns = layer.iter().max().map_or(0, |m| m + 1);
    let labels: Vec<String> = groups.iter().map(|g| g.label()).collect();
    let mut col_w = vec![MIN_NODE_W; columns];
    let mut col_n = vec![0i64; columns];
    for (i, l) in labels.iter().enumerate() {
        let chars = l.chars().count().min(MAX_LABEL) as i64;
        col_w[layer[i]] = col_w[layer[i]].max(chars * CHAR_W + 2 * PAD);
        col_n[layer[i]] += 1;
    }
    let col_h = |n: i64| n * NODE_H + (n - 1).max(0) * ROW_GAP;
    let tallest = col_n.iter().copied().map(col_h).max().unwrap_or(0);
    let mut col_x = Vec::with_capacity(columns);
    let mut x = MARGIN;
    for w in &col_w {
        col_x.push(x);
        x += w + COL_GAP;
    }
    let width = (x - COL_GAP + MARGIN).max(2 * MARGIN);
    let mut placed = vec![0i64; columns];
    let mut nodes = Vec::with_capacity(groups.len());
    for (i, g) in groups.iter().enumerate() {
        let c = layer[i];
        let top = MARGIN + (tallest - col_h(col_n[c])) / 2;
        let y = top + placed[c] * (NODE_H + ROW_GAP);
        placed[c] += 1;
        let href = if g.fanned {
            format!("?expand={}#expanded", encode(&g.name))
        } else {
            match g.instances.first() {
                Some(t) if !t.job_id.is_empty() => format!("/jobs/{}", encode(&t.job_id)),
                _ => String::new(),
            }
        };
        let mut title = labels[i].clone();
        if !g.depends_on.is_empty() {
            title.push_str(&format!(" (after {})", g.depends_on.join(", ")));
        }
        nodes.push(Node {
            name: g.name.clone(),
            class: format!(
                "node {}{}",
                g.state,
                if g.finally { " finally" } else { "" }
            ),
            label: cut(&labels[i], MAX_LABEL),
            title,
            href,
            x: col_x[c],
            y,
            w: col_w[c],
            h: NODE_H,
            text_x: col_x[c] + PAD,
            text_y: y + NODE_H / 2 + 4,
        });
    }
    let index: HashMap<&str, usize> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.name.as_str(), i))
        .collect();
    let mut edges = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        for u in &g.depends_on {
            let Some(&j) = index.get(u.as_str()) else {
                continue;
            };
            let (a, b) = (&nodes[j], &nodes[i]);
            let (x1, y1) = (a.x + a.w, a.y + a.h / 2);
            let (x2, y2) = (b.x - 2, b.y + b.h / 2);
            let mx = (x1 + x2) / 2;
            edges.push(Edge {
                from: u.clone(),
                to: g.name.clone(),
                d: format!("M{x1} {y1} C{mx} {y1} {mx} {y2} {x2} {y2}"),
            });
        }
    }
    let summary = labels.join("; ");
    Dag {
        nodes,
        edges,
        width,
        height: tallest + 2 * MARGIN,
        summary,
    }
}
