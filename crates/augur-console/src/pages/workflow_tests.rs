//! Tests of the run page's pure parts: grouping, layering, the SVG.

use super::dag::layers;
use super::*;

fn task(name: &str, deps: &[&str], item: Option<u32>, state: &str) -> pb::WorkflowTask {
    pb::WorkflowTask {
        name: name.to_string(),
        fanned: item.is_some(),
        item: item.map(|i| format!("f{i}.txt")).unwrap_or_default(),
        item_index: item.unwrap_or_default(),
        state: state.to_string(),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        ..Default::default()
    }
}

/// extract → transform × `width` (every tenth failed) → load; extract →
/// audit; cleanup (finally).
fn run(width: u32) -> pb::WorkflowRun {
    let mut tasks = vec![pb::WorkflowTask {
        job_id: "job-1".into(),
        attempts: 1,
        outputs: [("count".to_string(), "3".to_string())].into(),
        ..task("extract", &[], None, "succeeded")
    }];
    for i in 0..width {
        let state = if i % 10 == 9 { "failed" } else { "succeeded" };
        tasks.push(pb::WorkflowTask {
            job_id: format!("job-t{i}"),
            attempts: 1,
            ..task("transform", &["extract"], Some(i), state)
        });
    }
    tasks.push(task("audit", &["extract"], None, "succeeded"));
    tasks.push(task(
        "load",
        &["transform", "audit"],
        None,
        "upstream_failed",
    ));
    tasks.push(pb::WorkflowTask {
        finally: true,
        ..task("cleanup", &[], None, "succeeded")
    });
    pb::WorkflowRun {
        id: "run-1".into(),
        name: "nightly-etl".into(),
        state: "failed".into(),
        submitted_at_ms: 1_700_000_000_000,
        finished_at_ms: 1_700_000_012_345,
        counts: [
            ("succeeded".to_string(), width - width / 10 + 3),
            ("failed".to_string(), width / 10),
            ("upstream_failed".to_string(), 1),
        ]
        .into(),
        tasks,
        ..Default::default()
    }
}

#[test]
fn a_fanned_out_task_is_one_group_with_counts_and_its_worst_state() {
    let r = run(50);
    let g = groups(&r);
    let names: Vec<&str> = g.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["extract", "transform", "audit", "load", "cleanup"]);
    assert_eq!(g[1].instances.len(), 50);
    assert_eq!(g[1].state, "failed");
    assert_eq!(g[1].label(), "transform ×50: 45 succeeded, 5 failed");
    assert_eq!(g[0].label(), "extract: succeeded");
    assert_eq!(g[4].label(), "cleanup (finally): succeeded");
    // A running instance among succeeded ones makes the task running.
    let mut r = run(3);
    r.tasks[2].state = "running".into();
    assert_eq!(groups(&r)[1].state, "running");
    assert_eq!(
        counts_text([("failed", 2), ("succeeded", 48), ("pending", 0)]),
        "48 succeeded, 2 failed"
    );
}

#[test]
fn layers_follow_depth_and_finally_tasks_come_last() {
    let r = run(4);
    let g = groups(&r);
    // extract 0; transform, audit 1; load 2 (its deepest upstream is 1); cleanup 3.
    assert_eq!(layers(&g), [0, 1, 1, 2, 3]);
    // Without depends_on (an older server) everything is one layer, finally after.
    let mut old = run(4);
    for t in &mut old.tasks {
        t.depends_on.clear();
    }
    assert_eq!(layers(&groups(&old)), [0, 0, 0, 0, 1]);
}

#[test]
fn the_dag_places_columns_left_to_right_with_edges_between() {
    let r = run(50);
    let d = dag(&groups(&r));
    assert_eq!(d.nodes.len(), 5);
    let x = |name: &str| d.nodes.iter().find(|n| n.name == name).map(|n| n.x);
    assert!(x("extract") < x("transform"));
    assert_eq!(x("transform"), x("audit"));
    assert!(x("audit") < x("load") && x("load") < x("cleanup"));
    // transform and audit share a column without overlapping.
    let (t, a) = (&d.nodes[1], &d.nodes[2]);
    assert!(t.y + t.h <= a.y);
    // Every node inside the drawing.
    for n in &d.nodes {
        assert!(n.x >= 0 && n.x + n.w <= d.width, "{}", n.name);
        assert!(n.y >= 0 && n.y + n.h <= d.height, "{}", n.name);
    }
    let edges: Vec<(&str, &str)> = d
        .edges
        .iter()
        .map(|e| (e.from.as_str(), e.to.as_str()))
        .collect();
    assert_eq!(
        edges,
        [
            ("extract", "transform"),
            ("extract", "audit"),
            ("transform", "load"),
            ("audit", "load")
        ]
    );
    assert_eq!(d.nodes[1].class, "node failed");
    assert_eq!(d.nodes[4].class, "node succeeded finally");
    assert_eq!(d.nodes[1].href, "?expand=transform#expanded");
    assert_eq!(d.nodes[0].href, "/jobs/job-1");
}

#[test]
fn instances_collapse_per_fanned_task_unless_expanded() {
    let r = run(50);
    let g = graph(&r, "");
    assert_eq!(g.rows.len(), 5);
    assert_eq!(g.rows[1].instances, 50);
    assert_eq!(g.rows[1].state, "45 succeeded, 5 failed");
    assert_eq!(g.rows[1].attempts, 50);
    assert_eq!(g.rows[0].outputs, "count=3");
    assert!(g.expanded_rows.is_empty());
    let g = graph(&r, "transform");
    assert_eq!(g.expanded, "transform");
    assert_eq!(g.expanded_rows.len(), 50);
    assert_eq!(g.expanded_rows[9].state, "failed");
    assert_eq!(g.expanded_rows[9].item, "[9] f9.txt");
    assert!(graph(&r, "nope").expanded.is_empty());
}

#[test]
fn the_page_renders_nodes_with_state_classes_and_escapes_names() {
    let mut r = run(50);
    r.tasks[0].name = "ex<tract>".into();
    for t in &mut r.tasks {
        for d in &mut t.depends_on {
            if d == "extract" {
                *d = "ex<tract>".into();
            }
        }
    }
    let page = page_of(&r, "", Chrome::default(), true, None);
    let html = page.render().expect("renders");
    assert!(
        html.contains(r#"<g class="node failed" data-task="transform">"#),
        "{html}"
    );
    assert!(html.contains("transform ×50: 45 succeeded, 5 failed"));
    assert!(html.contains(r#"data-task="ex&#60;tract&#62;""#) || html.contains("ex&lt;tract&gt;"));
    assert!(!html.contains("ex<tract>"));
    assert!(html.contains(r#"id="retry""#) && !html.contains(r#"id="cancel""#));
    assert!(!html.contains("style="));
    r.state = "running".into();
    r.finished_at_ms = 0;
    let html = page_of(&r, "", Chrome::default(), true, None)
        .render()
        .expect("renders");
    assert!(html.contains(r#"id="cancel""#) && !html.contains(r#"id="retry""#));
    assert!(html.contains(r#"data-live="/workflows/run-1/graph""#));
    let html = page_of(&r, "", Chrome::default(), false, None)
        .render()
        .expect("renders");
    assert!(!html.contains(r#"id="cancel""#));
}
