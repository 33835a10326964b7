//! Request validation under random input: it never panics, accepts exactly
//! what the documented rules allow, and names the field it refuses.

use proptest::prelude::*;
use raftq_api::limits::*;
use raftq_api::v1::{Backoff, LeaseToken, NewJob};
use raftq_api::{validate, JobId};

fn queue_name_rule(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_QUEUE_NAME
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn any_new_job() -> impl Strategy<Value = NewJob> {
    (
        prop_oneof![
            Just(0usize),
            1usize..64,
            Just(MAX_PAYLOAD_BYTES),
            Just(MAX_PAYLOAD_BYTES + 1)
        ],
        proptest::collection::vec((".{0,8}", ".{0,32}"), 0..4),
        any::<i32>(),
        proptest::option::of(prop_oneof![any::<i64>(), -5i64..5, Just(MAX_DELAY_MS + 1)]),
        proptest::option::of(any::<i64>()),
        prop_oneof![0u32..5, Just(1000), Just(1001), any::<u32>()],
        proptest::option::of((any::<i64>(), any::<i64>(), any::<f64>())),
        prop_oneof![".{0,16}", Just("k".repeat(MAX_KEY_BYTES + 1))],
    )
        .prop_map(
            |(len, headers, priority, delay_ms, run_at_ms, max_attempts, backoff, key)| NewJob {
                payload: vec![7u8; len].into(),
                headers: headers.into_iter().collect(),
                priority,
                delay_ms,
                run_at_ms,
                max_attempts,
                backoff: backoff.map(|(initial_ms, max_ms, multiplier)| Backoff {
                    initial_ms,
                    max_ms,
                    multiplier,
                }),
                idempotency_key: key,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn queue_names_follow_the_rule(s in prop_oneof![".{0,140}", "[A-Za-z0-9._-]{0,140}"]) {
        let result = validate::queue_name(&s);
        prop_assert_eq!(result.is_ok(), queue_name_rule(&s), "{:?}: {:?}", s, result);
    }

    #[test]
    fn new_jobs_are_judged_without_panics(job in any_new_job(), index in 0usize..10_000) {
        match validate::new_job(index, &job) {
            Ok(()) => {
                prop_assert!(!job.payload.is_empty() && job.payload.len() <= MAX_PAYLOAD_BYTES);
                prop_assert!(job.max_attempts <= 1000);
                prop_assert!(!(job.delay_ms.is_some() && job.run_at_ms.is_some()));
                prop_assert!(job.idempotency_key.len() <= MAX_KEY_BYTES);
                prop_assert!(job.delay_ms.is_none_or(|d| (0..=MAX_DELAY_MS).contains(&d)));
                prop_assert!(job.run_at_ms.is_none_or(|t| t >= 0));
            }
            Err(e) => {
                let prefix = format!("jobs[{index}].");
                prop_assert!(e.0.contains(&prefix), "error names the job: {}", e.0);
            }
        }
    }

    #[test]
    fn job_ids_round_trip(shard in any::<u32>(), index in any::<u64>(), position in any::<u32>()) {
        let id = JobId { shard, index, position };
        prop_assert_eq!(id.to_string().parse::<JobId>(), Ok(id));
        prop_assert_eq!(JobId::from_bytes(&id.to_bytes()), Some(id));
    }

    #[test]
    fn garbage_job_ids_and_tokens_are_refused_cleanly(s in ".{0,40}", attempt in any::<u32>()) {
        let parsed = validate::job_id("job_id", &s);
        if let Ok(id) = parsed {
            prop_assert_eq!(id.to_string().parse::<JobId>(), Ok(id));
        } else if let Err(e) = parsed {
            prop_assert!(e.0.starts_with("job_id"), "{}", e.0);
        }
        let token = LeaseToken { job_id: s.clone(), attempt };
        if let Ok((_, a)) = validate::lease_token("tokens[0]", Some(&token)) {
            prop_assert!(a == attempt && a > 0);
        }
        prop_assert!(validate::lease_token("tokens[0]", None).is_err());
    }

    #[test]
    fn durations_outside_their_range_are_refused(v in proptest::option::of(any::<i64>()), max in 1i64..i64::MAX) {
        let ok = validate::optional_duration("lease_ms", v, max).is_ok();
        prop_assert_eq!(ok, v.is_none_or(|ms| ms > 0 && ms <= max));
    }
}
