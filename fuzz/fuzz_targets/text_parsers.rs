//! Small text parsers of user and operator input: cron expressions (and the
//! tick arithmetic on them), human durations, schedule names and missed-tick
//! policies, node and job ids, job states, and the simulator's worker spec.
//! The first byte picks the parser; the rest is the text. Invariant: an error
//! or a value, never a panic; accepted values are within their documented
//! bounds.
#![no_main]

use augur_core::ids::validate_node_id;
use augur_core::schedule::{validate_name, Cron, MissedTicks};
use augur_core::spec::parse_duration;
use augur_core::{JobId, JobState, WorkerId};
use augur_placement::parse_workers;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 6 {
        0 => {
            // Cron text, then two timestamps taken from the tail of the input.
            let (text, times) = rest.split_at(rest.len().saturating_sub(16));
            let text = String::from_utf8_lossy(text);
            let mut a = [0u8; 8];
            let mut b = [0u8; 8];
            let (ta, tb) = times.split_at(times.len().min(8));
            a[..ta.len()].copy_from_slice(ta);
            b[..tb.len()].copy_from_slice(tb);
            let (after, up_to) = (i64::from_le_bytes(a), i64::from_le_bytes(b));
            if let Ok(cron) = Cron::parse(&text) {
                if let Some(next) = cron.next_after(after) {
                    assert!(next > after);
                }
                if let Some(latest) = cron.latest_in(after, up_to) {
                    assert!(latest > after && latest <= up_to);
                }
            }
        }
        1 => {
            let _ = parse_duration("fuzz", &String::from_utf8_lossy(rest));
        }
        2 => {
            let text = String::from_utf8_lossy(rest);
            if validate_name(&text).is_ok() {
                assert!(!text.is_empty() && text.len() <= 128);
            }
            let _ = text.parse::<MissedTicks>();
            let _ = text.parse::<JobState>();
        }
        3 => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(id) = WorkerId::new(text.to_string()) {
                assert!(validate_node_id(id.as_str()).is_ok());
            }
            if let Ok(id) = text.parse::<JobId>() {
                assert_eq!(id.to_string().len(), 26);
            }
        }
        _ => {
            if let Ok(groups) = parse_workers(&String::from_utf8_lossy(rest)) {
                assert!(!groups.is_empty());
                for group in &groups {
                    assert!(group.count >= 1 && group.slots >= 1 && group.speed > 0.0);
                    assert!(group.speed.is_finite());
                }
            }
        }
    }
});
