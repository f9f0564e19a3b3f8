//! Replication definitions: named jobs that copy a payload (objects and prefixes) to a target
//! site, on demand or on a schedule. A run is a task of type [`RUN_KIND`].

pub mod run;
pub mod scheduler;

use chrono::{DateTime, Duration, Months, TimeZone, Utc};

use crate::error::{Error, Result};
use crate::meta::tasks::Schedule;
use crate::model::names::{check_bucket, check_object};

/// Task type of a definition run (Alfresco's action type).
pub const RUN_KIND: &str = "replicationActionExecutor";

/// Registers the run executor with its own slots (`[tasks] limits.<kind>`, else
/// `[tasks] max_concurrent`).
pub fn register(jobs: &crate::engines::tasks::JobContext) {
    let tasks = &jobs.config.tasks;
    let limit = tasks
        .limits
        .get(RUN_KIND)
        .copied()
        .unwrap_or(tasks.max_concurrent);
    jobs.tasks.register(
        RUN_KIND,
        std::sync::Arc::new(run::DefinitionRun(jobs.clone())),
        limit,
    );
}

/// One payload entry: `bucket/key` or `bucket/prefix/` (a folder).
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadEntry {
    pub bucket: String,
    pub path: String,
}

impl PayloadEntry {
    pub fn parse(entry: &str) -> Result<Self> {
        let (bucket, path) = entry
            .trim_start_matches('/')
            .split_once('/')
            .ok_or_else(|| {
                Error::bad_request(format!(
                    "payload entry {entry:?}: expected bucket/key or bucket/prefix/"
                ))
            })?;
        check_bucket(bucket)?;
        if !path.is_empty() {
            check_object(path)?;
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            path: path.to_owned(),
        })
    }

    /// A prefix (ends with `/`, or the whole bucket).
    pub fn is_folder(&self) -> bool {
        self.path.is_empty() || self.path.ends_with('/')
    }
}

pub const PERIODS: [&str; 6] = ["Month", "Week", "Day", "Hour", "Minute", "Second"];

fn step(t: DateTime<Utc>, period: &str, count: i64) -> Option<DateTime<Utc>> {
    let count32 = u32::try_from(count).ok()?;
    match period {
        "Month" => t.checked_add_months(Months::new(count32)),
        "Week" => t.checked_add_signed(Duration::weeks(count)),
        "Day" => t.checked_add_signed(Duration::days(count)),
        "Hour" => t.checked_add_signed(Duration::hours(count)),
        "Minute" => t.checked_add_signed(Duration::minutes(count)),
        "Second" => t.checked_add_signed(Duration::seconds(count)),
        _ => None,
    }
}

/// The first due time strictly after `after_ms`, or None when the schedule has no more.
pub fn due_after(s: &Schedule, after_ms: i64) -> Option<i64> {
    if after_ms < s.start_ms {
        return Some(s.start_ms);
    }
    let (period, count) = (s.period.as_deref()?, s.count.filter(|c| *c > 0)?);
    let start = Utc.timestamp_millis_opt(s.start_ms).single()?;
    // Jump close for fixed periods, then walk (months vary in length).
    let fixed_ms = match period {
        "Week" => Some(7 * 86_400_000),
        "Day" => Some(86_400_000),
        "Hour" => Some(3_600_000),
        "Minute" => Some(60_000),
        "Second" => Some(1000),
        _ => None,
    };
    let mut t = match fixed_ms {
        Some(unit) => {
            let every = unit * count;
            let k = (after_ms - s.start_ms) / every;
            Utc.timestamp_millis_opt(s.start_ms + k * every).single()?
        }
        None => start,
    };
    while t.timestamp_millis() <= after_ms {
        t = step(t, period, count)?;
    }
    Some(t.timestamp_millis())
}

/// When a newly saved schedule is first due: its start, or now when the start has passed and
/// nothing repeats, or the next repetition at or after now.
pub fn first_due(s: &Schedule, now_ms: i64) -> Option<i64> {
    if s.start_ms >= now_ms {
        return Some(s.start_ms);
    }
    if s.period.is_none() {
        return Some(now_ms);
    }
    due_after(s, now_ms - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(start: i64, period: Option<&str>, count: Option<i64>) -> Schedule {
        Schedule {
            start_ms: start,
            period: period.map(str::to_owned),
            count,
        }
    }

    #[test]
    fn payload_entries() {
        let e = PayloadEntry::parse("bkt/dir/sub/").unwrap();
        assert!(e.is_folder());
        assert_eq!(e.path, "dir/sub/");
        assert!(!PayloadEntry::parse("bkt/a.txt").unwrap().is_folder());
        assert!(PayloadEntry::parse("bkt/").unwrap().is_folder());
        assert!(PayloadEntry::parse("nobucket").is_err());
        assert!(PayloadEntry::parse("BAD/x").is_err());
    }

    #[test]
    fn due_times_step_and_skip_missed_windows() {
        let s = sched(1_000_000, Some("Second"), Some(5));
        assert_eq!(due_after(&s, 0), Some(1_000_000));
        assert_eq!(due_after(&s, 1_000_000), Some(1_005_000));
        // Down for a long time: the next due time is the first one after now, once.
        assert_eq!(due_after(&s, 1_123_456), Some(1_125_000));
        assert_eq!(due_after(&sched(10, None, None), 20), None);
    }

    #[test]
    fn months_follow_the_calendar() {
        let jan31 = Utc
            .with_ymd_and_hms(2026, 1, 31, 0, 0, 0)
            .unwrap()
            .timestamp_millis();
        let s = sched(jan31, Some("Month"), Some(1));
        let next = due_after(&s, jan31).unwrap();
        assert_eq!(
            Utc.timestamp_millis_opt(next)
                .unwrap()
                .format("%m-%d")
                .to_string(),
            "02-28"
        );
    }

    #[test]
    fn first_due_of_a_past_one_shot_is_now() {
        assert_eq!(first_due(&sched(10, None, None), 1000), Some(1000));
        assert_eq!(first_due(&sched(5000, None, None), 1000), Some(5000));
    }
}
