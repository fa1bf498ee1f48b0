//! Tests of the model page's pure parts: points, accuracy, the scatter.

use super::*;

fn point(name: &str, predicted_s: f64, actual_s: f64) -> Point {
    Point {
        job_id: "j".into(),
        name: name.into(),
        predicted_s,
        actual_s,
        source: "model".into(),
        model_version: 3,
    }
}

#[test]
fn accuracy_counts_within_2x_and_the_median_log_error() {
    let points = [
        point("a", 10.0, 10.0),
        point("a", 10.0, 19.0),
        point("b", 10.0, 40.0),
        point("b", 1.0, 0.25),
    ];
    let a = accuracy("all", &points);
    assert_eq!(a.runs, 4);
    assert_eq!(a.within_2x, "50.0%");
    // |log2| errors 0, 0.93, 2, 2: the median is (0.93 + 2) / 2.
    assert_eq!(a.median_abs_log2, "1.46");
    let classes = by_class(&points);
    assert_eq!(classes.len(), 2);
    assert_eq!((classes[0].label.as_str(), classes[0].runs), ("a", 2));
    assert_eq!(classes[0].within_2x, "100.0%");
    assert_eq!(classes[1].within_2x, "0.0%");
    let none = accuracy("none", &[]);
    assert_eq!(
        (none.within_2x.as_str(), none.median_abs_log2.as_str()),
        ("—", "—")
    );
}

#[test]
fn a_point_is_the_recorded_prediction_against_the_last_attempt() {
    let job = pb::Job {
        id: "j1".into(),
        spec: Some(pb::JobSpec {
            name: "etl".into(),
            ..Default::default()
        }),
        started_at_ms: 10_000,
        finished_at_ms: 14_000,
        placement: Some(pb::Placement {
            predicted_seconds: Some(2.0),
            source: "model".into(),
            model_version: 7,
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = Point::of(&job).expect("a prediction");
    assert_eq!(
        (p.name.as_str(), p.predicted_s, p.actual_s),
        ("etl", 2.0, 4.0)
    );
    assert!(p.by_model());
    assert_eq!(p.abs_log2(), 1.0);
    // No placement, no predicted runtime, or never started: nothing to score.
    assert!(Point::of(&pb::Job {
        placement: None,
        ..job.clone()
    })
    .is_none());
    let unpredicted = pb::Job {
        placement: Some(pb::Placement::default()),
        ..job.clone()
    };
    assert!(Point::of(&unpredicted).is_none());
    assert!(Point::of(&pb::Job {
        started_at_ms: 0,
        ..job
    })
    .is_none());
}

#[test]
fn the_scatter_is_log_log_over_whole_decades() {
    let points = [
        point("a", 1.0, 1.0),
        point("a", 10.0, 100.0),
        point("b", 0.5, 2.0),
    ];
    let s = scatter(&points);
    assert_eq!(s.circles.len(), 3);
    assert!(s.circles.iter().all(|c| c.class.starts_with("run ")));
    // Decades 0.1 s .. 100 s: four ticks, a third of the plot apart.
    let labels: Vec<&str> = s.ticks.iter().map(|t| t.label.as_str()).collect();
    assert_eq!(labels, ["0.1 s", "1 s", "10 s", "100 s"]);
    let num = |t: &str| t.parse::<f64>().expect("a number");
    assert!((num(&s.ticks[0].x) - s.left).abs() < 0.1);
    assert!((num(&s.ticks[3].x) - s.right).abs() < 0.1);
    assert!((num(&s.ticks[3].y) - s.top).abs() < 0.1);
    // An exact prediction sits on the diagonal: x and y at the same decade.
    let c = &s.circles[0];
    assert_eq!(c.cx, s.ticks[1].x);
    assert_eq!(c.cy, s.ticks[1].y);
    // 10 s predicted, 100 s actual: one decade right, two up.
    assert_eq!(s.circles[1].cx, s.ticks[2].x);
    assert_eq!(s.circles[1].cy, s.ticks[3].y);
    // The diagonal runs corner to corner.
    assert_eq!(s.diagonal[0], s.ticks[0].x);
    assert_eq!(s.diagonal[3], s.ticks[3].y);
    // Nothing to plot: still a drawable frame.
    let empty = scatter(&[]);
    assert!(empty.circles.is_empty() && empty.ticks.len() >= 2);
}

#[test]
fn the_page_has_one_circle_per_scored_job_and_says_where_predictions_come_from() {
    let points: Vec<Point> = (1..=5).map(|i| point("a", f64::from(i), 2.0)).collect();
    let page = ModelPage {
        chrome: Chrome::default(),
        has_model: false,
        no_model: "no runtime model has been trained yet.".into(),
        version: 0,
        trained: String::new(),
        training_runs: 0,
        algorithm: String::new(),
        in_sample: String::new(),
        policy: "predictive".into(),
        config: "{}".into(),
        config_default: true,
        config_revision: 0,
        scanned: 6,
        without: 1,
        capped: false,
        overall: vec![accuracy("all scored jobs", &points)],
        classes: by_class(&points),
        scatter: scatter(&points),
        scored: points.len(),
    };
    let html = page.render().expect("renders");
    assert_eq!(html.matches("<circle class=\"run").count(), 5);
    assert!(html.contains("1 had no recorded prediction"));
    assert!(!html.contains("style="));
}
