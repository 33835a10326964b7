//! Request validation shared by the node (authoritative) and the SDK (to
//! fail fast). Every error names the field and says what would be accepted.

use crate::limits::*;
use crate::v1::{Backoff, LeaseToken, NewJob};
use crate::JobId;

/// Why a request was refused; the text is meant for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

macro_rules! invalid {
    ($($arg:tt)*) => { Err(Invalid(format!($($arg)*))) };
}

/// Queue names: 1..=128 chars of `[A-Za-z0-9._-]`, starting with a letter or digit.
pub fn queue_name(name: &str) -> Result<(), Invalid> {
    if name.is_empty() {
        return invalid!("queue name is empty: give a name such as \"emails\"");
    }
    if name.len() > MAX_QUEUE_NAME {
        return invalid!(
            "queue name is {} bytes long; the limit is {MAX_QUEUE_NAME}",
            name.len()
        );
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return invalid!("queue name {name:?} must start with a letter or digit");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return invalid!(
            "queue name {name:?} contains {c:?}; only letters, digits, '.', '_' and '-' are allowed"
        );
    }
    Ok(())
}

/// A duration that, when present, must be in `1..=max` ms.
pub fn optional_duration(field: &str, value: Option<i64>, max: i64) -> Result<(), Invalid> {
    match value {
        None => Ok(()),
        Some(ms) if ms <= 0 => {
            invalid!("{field} must be > 0 ms (got {ms}); omit it for the default")
        }
        Some(ms) if ms > max => invalid!("{field} is {ms} ms; the limit is {max} ms"),
        Some(_) => Ok(()),
    }
}

pub fn backoff(field: &str, b: &Backoff) -> Result<(), Invalid> {
    if b.initial_ms <= 0 || b.initial_ms > MAX_DELAY_MS {
        return invalid!(
            "{field}.initial_ms must be in 1..={MAX_DELAY_MS} (got {})",
            b.initial_ms
        );
    }
    if b.max_ms < b.initial_ms || b.max_ms > MAX_DELAY_MS {
        return invalid!(
            "{field}.max_ms must be in initial_ms..={MAX_DELAY_MS} (got {})",
            b.max_ms
        );
    }
    if !(b.multiplier.is_finite() && (1.0..=100.0).contains(&b.multiplier)) {
        return invalid!(
            "{field}.multiplier must be in 1.0..=100.0 (got {})",
            b.multiplier
        );
    }
    Ok(())
}

pub fn short_text(field: impl std::fmt::Display, value: &str, max: usize) -> Result<(), Invalid> {
    if value.len() > max {
        return invalid!("{field} is {} bytes long; the limit is {max}", value.len());
    }
    Ok(())
}

/// One job of an Enqueue request; `index` names it in the message.
pub fn new_job(index: usize, job: &NewJob) -> Result<(), Invalid> {
    let at = |what: &str| format!("jobs[{index}].{what}");
    if job.payload.is_empty() {
        return invalid!("{} is empty: a job needs a payload", at("payload"));
    }
    if job.payload.len() > MAX_PAYLOAD_BYTES {
        return invalid!(
            "{} is {} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes (store large data elsewhere and enqueue a reference)",
            at("payload"),
            job.payload.len()
        );
    }
    if job.headers.len() > MAX_HEADERS {
        return invalid!(
            "{} has {} entries; the limit is {MAX_HEADERS}",
            at("headers"),
            job.headers.len()
        );
    }
    let header_bytes: usize = job.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if header_bytes > MAX_HEADER_BYTES {
        return invalid!(
            "{} total {header_bytes} bytes; the limit is {MAX_HEADER_BYTES}",
            at("headers")
        );
    }
    if job.delay_ms.is_some() && job.run_at_ms.is_some() {
        return invalid!("{}: give delay_ms or run_at_ms, not both", at("delay_ms"));
    }
    if let Some(d) = job.delay_ms {
        if !(0..=MAX_DELAY_MS).contains(&d) {
            return invalid!("{} must be in 0..={MAX_DELAY_MS} (got {d})", at("delay_ms"));
        }
    }
    if let Some(t) = job.run_at_ms {
        if t < 0 {
            return invalid!(
                "{} must be a unix time in ms, >= 0 (got {t})",
                at("run_at_ms")
            );
        }
        // The same horizon as delay_ms: at most 366 days ahead.
        let latest = unix_now_ms().saturating_add(MAX_DELAY_MS);
        if t > latest {
            return invalid!(
                "{} is {t}, more than {} days from now (the limit, as for delay_ms); schedule it closer",
                at("run_at_ms"),
                MAX_DELAY_MS / (24 * 3600 * 1000)
            );
        }
    }
    if let Some(b) = &job.backoff {
        backoff(&at("backoff"), b)?;
    }
    if job.max_attempts > 1000 {
        return invalid!(
            "{} is {}; the limit is 1000",
            at("max_attempts"),
            job.max_attempts
        );
    }
    // Checked for every job enqueued: the name is formatted only on error.
    short_text(
        format_args!("jobs[{index}].idempotency_key"),
        &job.idempotency_key,
        MAX_KEY_BYTES,
    )
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `field` names the value in the error (formatted only on error: ids
/// and tokens are checked on every ack).
pub fn job_id(field: impl std::fmt::Display, id: &str) -> Result<JobId, Invalid> {
    id.parse::<JobId>()
        .map_err(|e| Invalid(format!("{field}: {e}")))
}

pub fn lease_token(
    field: impl std::fmt::Display + Copy,
    token: Option<&LeaseToken>,
) -> Result<(JobId, u32), Invalid> {
    let Some(token) = token else {
        return invalid!("{field} is missing");
    };
    let id = job_id(format_args!("{field}.job_id"), &token.job_id)?;
    if token.attempt == 0 {
        return invalid!("{field}.attempt is 0; pass the token exactly as the lease gave it");
    }
    Ok((id, token.attempt))
}

pub fn batch_len(field: &str, len: usize, max: usize) -> Result<(), Invalid> {
    if len == 0 {
        return invalid!("{field} is empty");
    }
    if len > max {
        return invalid!("{field} has {len} items; the limit is {max} per request");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names() {
        for good in [
            "a",
            "emails",
            "jobs.high-prio_2",
            &"x".repeat(MAX_QUEUE_NAME),
        ] {
            assert_eq!(queue_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "a/b",
            "é",
            &"x".repeat(MAX_QUEUE_NAME + 1),
        ] {
            assert!(queue_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations() {
        assert!(optional_duration("lease_ms", None, 10).is_ok());
        assert!(optional_duration("lease_ms", Some(10), 10).is_ok());
        let e = optional_duration("lease_ms", Some(0), 10).unwrap_err();
        assert!(e.0.contains("lease_ms must be > 0"), "{e}");
        assert!(optional_duration("lease_ms", Some(-5), 10).is_err());
        assert!(optional_duration("lease_ms", Some(11), 10).is_err());
    }

    #[test]
    fn jobs() {
        let ok = NewJob {
            payload: "x".into(),
            ..Default::default()
        };
        assert!(new_job(0, &ok).is_ok());
        let empty = NewJob::default();
        assert!(new_job(3, &empty)
            .unwrap_err()
            .0
            .starts_with("jobs[3].payload is empty"));
        let big = NewJob {
            payload: vec![0u8; MAX_PAYLOAD_BYTES + 1].into(),
            ..Default::default()
        };
        assert!(new_job(0, &big).unwrap_err().0.contains("limit is 1048576"));
        let both = NewJob {
            payload: "x".into(),
            delay_ms: Some(1),
            run_at_ms: Some(1),
            ..Default::default()
        };
        assert!(new_job(0, &both).is_err());
        let bad_backoff = NewJob {
            payload: "x".into(),
            backoff: Some(Backoff {
                initial_ms: 10,
                max_ms: 5,
                multiplier: 2.0,
            }),
            ..Default::default()
        };
        assert!(new_job(0, &bad_backoff).is_err());
    }

    #[test]
    fn run_at_has_the_same_horizon_as_delay() {
        let at = |t: i64| NewJob {
            payload: "x".into(),
            run_at_ms: Some(t),
            ..Default::default()
        };
        assert!(new_job(0, &at(0)).is_ok(), "a past time means now");
        assert!(new_job(0, &at(unix_now_ms() + MAX_DELAY_MS - 60_000)).is_ok());
        let far = new_job(0, &at(i64::MAX)).unwrap_err().0;
        assert!(
            far.contains("jobs[0].run_at_ms") && far.contains("366 days"),
            "{far}"
        );
        assert!(new_job(0, &at(unix_now_ms() + MAX_DELAY_MS + 60_000)).is_err());
    }
}
