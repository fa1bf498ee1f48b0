//! Periodic schedules: a cron expression and the job to submit at each tick.
//! Pure: parsing, validation and tick arithmetic; the leader does the firing.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::spec::{JobSpec, ValidationError};

/// Schema version of stored schedules.
pub const SCHEDULE_VERSION: u32 = 1;
/// Longest schedule name.
pub const MAX_SCHEDULE_NAME: usize = 128;

/// What to do with ticks that fell while no leader was there to fire them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedTicks {
    /// Fire once, for the latest missed tick (as Kubernetes CronJob with a
    /// deadline, or Airflow without catch-up).
    FireOnce,
    /// Fire nothing for missed ticks; continue with the next one.
    Skip,
}

impl FromStr for MissedTicks {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fire-once" | "fire_once" => Ok(MissedTicks::FireOnce),
            "skip" => Ok(MissedTicks::Skip),
            other => Err(ValidationError {
                field: "missed".into(),
                reason: format!("{other:?} is not a policy; use fire-once or skip"),
            }),
        }
    }
}

/// A stored schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub v: u32,
    pub name: String,
    /// As written by the user (5 fields, or 6–7 with seconds first).
    pub cron: String,
    pub spec: JobSpec,
    pub paused: bool,
    pub missed: MissedTicks,
    pub created_at_ms: i64,
    /// The last tick fired (or deliberately skipped), unix ms.
    pub last_tick_ms: Option<i64>,
    /// The API token that created it (`None` without authentication): its
    /// jobs are owned by it too, and only it or an admin may pause or
    /// delete it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Each tick runs this workflow instead of submitting `spec` (which is
    /// then an internal placeholder, not shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<ScheduledWorkflow>,
}

/// The workflow a schedule runs at each tick: its file as submitted (checked
/// when the schedule was created, and again at each tick) and parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduledWorkflow {
    pub name: String,
    pub file_name: String,
    pub source: String,
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
}

/// A parsed cron expression.
#[derive(Clone, Debug)]
pub struct Cron(cron::Schedule);

impl Cron {
    /// Parses a cron expression. Five fields are the classic
    /// `minute hour day month weekday`; six or seven start with seconds (and
    /// may end with a year). Times are UTC.
    pub fn parse(text: &str) -> Result<Cron, ValidationError> {
        let fields = text.split_whitespace().count();
        let full = match fields {
            5 => format!("0 {text}"),
            6 | 7 => text.to_string(),
            n => {
                return Err(ValidationError {
                    field: "cron".into(),
                    reason: format!("{text:?} has {n} fields; write 5 (minute hour day month weekday) or 6 with seconds first"),
                })
            }
        };
        cron::Schedule::from_str(&full)
            .map(Cron)
            .map_err(|e| ValidationError {
                field: "cron".into(),
                reason: format!("{text:?} is not a cron expression: {e}"),
            })
    }

    /// The first tick strictly after `after_ms`.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let after: DateTime<Utc> = Utc.timestamp_millis_opt(after_ms).single()?;
        self.0.after(&after).next().map(|t| t.timestamp_millis())
    }

    /// The latest tick in `(after_ms, up_to_ms]`, if any.
    pub fn latest_in(&self, after_ms: i64, up_to_ms: i64) -> Option<i64> {
        let mut latest = None;
        let mut cursor = after_ms;
        // Bounded walk: a schedule firing every second over a long outage
        // would otherwise iterate for a long time; jump ahead when far behind.
        let mut steps = 0;
        while let Some(t) = self.next_after(cursor) {
            if t > up_to_ms {
                break;
            }
            latest = Some(t);
            cursor = t;
            steps += 1;
            if steps > 10_000 {
                cursor = up_to_ms - 86_400_000;
                steps = 0;
                if cursor <= t {
                    cursor = t;
                }
            }
        }
        latest
    }
}

/// Checks a schedule name: 1..=128 of `[A-Za-z0-9._-]`.
pub fn validate_name(name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SCHEDULE_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError {
            field: "name".into(),
            reason: format!("{name:?} must be 1..={MAX_SCHEDULE_NAME} characters of letters, digits, '.', '_' and '-'"),
        })
    }
}

/// The idempotency key of one tick: firing it twice creates one job.
pub fn tick_key(name: &str, tick_ms: i64) -> String {
    format!("schedule/{name}/{tick_ms}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_field_expressions() {
        let every_minute = Cron::parse("* * * * *").unwrap();
        assert_eq!(every_minute.next_after(0), Some(60_000));
        let every_second = Cron::parse("* * * * * *").unwrap();
        assert_eq!(every_second.next_after(1_500), Some(2_000));
        assert_eq!(every_second.latest_in(1_000, 4_500), Some(4_000));
        assert_eq!(every_second.latest_in(1_000, 1_999), None);
        assert!(Cron::parse("* * *").is_err());
        assert!(Cron::parse("61 * * * *").is_err());
    }

    #[test]
    fn names_and_policies() {
        assert!(validate_name("nightly-etl.v2").is_ok());
        assert!(validate_name("a/b").is_err());
        assert_eq!("skip".parse::<MissedTicks>().unwrap(), MissedTicks::Skip);
        assert!("sometimes".parse::<MissedTicks>().is_err());
        assert_eq!(tick_key("n", 5), "schedule/n/5");
    }
}
