//! Job-spec input → validation, along the three paths external input takes:
//! a JSON or TOML spec file (`augur submit --file`) and the protobuf
//! `SubmitJobRequest` the API decodes. The first byte picks the path.
//! Invariant: validation either refuses with an error or returns a spec that
//! respects every documented limit and survives the store's JSON codec.
#![no_main]

use augur_core::spec::{
    JobSpecInput, MAX_ARGS, MAX_ARGV_BYTES, MAX_ENV_BYTES, MAX_LABELS, MAX_NAME, MAX_SLOTS,
    MAX_TIMEOUT, PRIORITY_RANGE,
};
use augur_core::JobSpec;
use augur_proto::v1 as pb;
use augur_store::codec::{decode, encode};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let input: Option<JobSpecInput> = match selector % 3 {
        0 => serde_json::from_slice(rest).ok(),
        1 => std::str::from_utf8(rest)
            .ok()
            .and_then(|text| toml::from_str(text).ok()),
        _ => pb::SubmitJobRequest::decode(rest)
            .ok()
            .and_then(|request| request.spec)
            .map(JobSpecInput::from),
    };
    let Some(input) = input else {
        return;
    };
    let Ok(spec) = input.validate() else {
        return;
    };
    check_limits(&spec);
    let stored: JobSpec = decode(b"fuzz", &encode(&spec)).expect("a valid spec decodes");
    assert_eq!(stored.name, spec.name);
    assert_eq!(stored.args, spec.args);
    assert_eq!(stored.env, spec.env);
    assert_eq!(stored.resources, spec.resources);
    // The wire form of a validated spec validates again to the same spec.
    let again = JobSpecInput::from(pb::JobSpec::from(&spec))
        .validate()
        .expect("a validated spec validates again");
    assert_eq!(again.name, spec.name);
    assert_eq!(again.timeout_ms, spec.timeout_ms);
    assert_eq!(again.resources, spec.resources);
});

fn check_limits(spec: &JobSpec) {
    assert!(!spec.command.trim().is_empty());
    assert!(spec.args.len() <= MAX_ARGS);
    let argv: usize = spec.command.len() + spec.args.iter().map(String::len).sum::<usize>();
    assert!(argv <= MAX_ARGV_BYTES);
    let env: usize = spec.env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    assert!(env <= MAX_ENV_BYTES);
    assert!(spec.labels.len() <= MAX_LABELS && spec.constraints.len() <= MAX_LABELS);
    assert!(!spec.name.is_empty() && spec.name.len() <= MAX_NAME);
    assert!(PRIORITY_RANGE.contains(&spec.priority));
    assert!(spec.resources.slots >= 1 && spec.resources.slots <= MAX_SLOTS);
    if let Some(ms) = spec.timeout_ms {
        assert!(ms > 0 && u128::from(ms) <= MAX_TIMEOUT.as_millis());
    }
    let retry = &spec.retry;
    assert!(retry.initial_backoff_ms <= retry.max_backoff_ms);
    assert!((1.0..=10.0).contains(&retry.multiplier));
}
