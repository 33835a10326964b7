//! Conversions between the wire messages and the state machine's types.

use raftq_api::limits::{MAX_DELAY_MS, MAX_ERROR_BYTES, MAX_LEASE_MS};
use raftq_api::v1 as pb;
use raftq_api::validate::{self, Invalid};

use crate::ops::{
    BackoffPolicy, JobContent, JobState, JobView, Nack, NewJob, QueueView, TokenOutcome, When,
};

pub fn backoff_from(b: &pb::Backoff) -> BackoffPolicy {
    BackoffPolicy {
        initial_ms: b.initial_ms as u64,
        max_ms: b.max_ms as u64,
        multiplier: b.multiplier,
    }
}

pub fn backoff_to(b: &BackoffPolicy) -> pb::Backoff {
    pb::Backoff {
        initial_ms: b.initial_ms as i64,
        max_ms: b.max_ms as i64,
        multiplier: b.multiplier,
    }
}

/// A validated job of an Enqueue request, as the op carries it.
pub fn new_job(index: usize, job: pb::NewJob) -> Result<NewJob, Invalid> {
    validate::new_job(index, &job)?;
    let when = match (job.delay_ms, job.run_at_ms) {
        (Some(d), _) if d > 0 => When::Delay(d as u64),
        (_, Some(t)) => When::At(t as u64),
        _ => When::Now,
    };
    let mut headers: Vec<(String, String)> = job.headers.into_iter().collect();
    // Maps arrive in any order; the replicated op must not.
    headers.sort_unstable();
    Ok(NewJob {
        payload: job.payload,
        headers,
        priority: job.priority,
        when,
        max_attempts: job.max_attempts,
        backoff: job.backoff.as_ref().map(backoff_from),
        idempotency_key: Some(job.idempotency_key).filter(|k| !k.is_empty()),
    })
}

pub fn lease_ms(field: &str, value: Option<i64>) -> Result<Option<u64>, Invalid> {
    validate::optional_duration(field, value, MAX_LEASE_MS)?;
    Ok(value.map(|v| v as u64))
}

pub fn tokens(
    field: &str,
    tokens: &[pb::LeaseToken],
) -> Result<Vec<(raftq_api::JobId, u32)>, Invalid> {
    validate::batch_len(field, tokens.len(), raftq_api::limits::MAX_TOKEN_BATCH)?;
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| validate::lease_token(format_args!("{field}[{i}]"), Some(t)))
        .collect()
}

pub fn nacks(field: &str, items: Vec<pb::NackItem>) -> Result<Vec<Nack>, Invalid> {
    validate::batch_len(field, items.len(), raftq_api::limits::MAX_TOKEN_BATCH)?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| nack(format_args!("{field}[{i}]"), item))
        .collect()
}

/// One nack item, validated; `at` names it in an error.
pub fn nack(at: std::fmt::Arguments<'_>, item: pb::NackItem) -> Result<Nack, Invalid> {
    let (id, attempt) = validate::lease_token(format_args!("{at}.token"), item.token.as_ref())?;
    if let Some(d) = item.retry_delay_ms {
        if !(0..=MAX_DELAY_MS).contains(&d) {
            return Err(Invalid(format!(
                "{at}.retry_delay_ms must be in 0..={MAX_DELAY_MS} (got {d})"
            )));
        }
    }
    validate::short_text(format_args!("{at}.error"), &item.error, MAX_ERROR_BYTES)?;
    Ok(Nack {
        id,
        attempt,
        retry_delay_ms: item.retry_delay_ms.map(|d| d as u64),
        error: item.error,
        dead: item.dead,
    })
}

/// The result of an item refused before it reached the state machine.
pub fn rejected(token: Option<pb::LeaseToken>, why: Invalid) -> pb::TokenResult {
    pb::TokenResult {
        token,
        code: tonic::Code::InvalidArgument as i32,
        message: why.0,
        lease_expires_at_ms: 0,
    }
}

pub fn job_state(state: JobState) -> pb::JobState {
    match state {
        JobState::Scheduled => pb::JobState::Scheduled,
        JobState::Ready => pb::JobState::Ready,
        JobState::Leased => pb::JobState::Leased,
        JobState::Dead => pb::JobState::Dead,
    }
}

pub fn job(view: &JobView, content: &JobContent) -> pb::Job {
    let s = &view.status;
    pb::Job {
        id: view.id.to_string(),
        queue: view.queue.to_string(),
        payload: content.payload.clone(),
        headers: content.headers.iter().cloned().collect(),
        priority: view.priority,
        state: job_state(s.state) as i32,
        attempt: s.attempts_used(),
        max_attempts: view.max_attempts,
        enqueued_at_ms: view.enqueued_at_ms as i64,
        due_at_ms: s.due_at_ms as i64,
        last_error: s.last_error.clone().unwrap_or_default(),
        idempotency_key: view.idempotency_key.clone().unwrap_or_default(),
        worker_id: s.worker.clone().unwrap_or_default(),
    }
}

pub fn leased_job((view, content): &(JobView, JobContent)) -> pb::LeasedJob {
    pb::LeasedJob {
        token: Some(pb::LeaseToken {
            job_id: view.id.to_string(),
            attempt: view.status.attempt,
        }),
        lease_expires_at_ms: view.status.due_at_ms as i64,
        job: Some(job(view, content)),
    }
}

pub fn token_result(outcome: &TokenOutcome) -> pb::TokenResult {
    let token = Some(pb::LeaseToken {
        job_id: outcome.id.to_string(),
        attempt: outcome.attempt,
    });
    match &outcome.result {
        Ok(expiry) => pb::TokenResult {
            token,
            code: tonic::Code::Ok as i32,
            message: String::new(),
            lease_expires_at_ms: expiry.unwrap_or(0) as i64,
        },
        Err(e) => pb::TokenResult {
            token,
            code: super::op_code(e) as i32,
            message: e.to_string(),
            lease_expires_at_ms: 0,
        },
    }
}

pub fn queue_info(view: &QueueView) -> pb::QueueInfo {
    pb::QueueInfo {
        queue: view.name.clone(),
        paused: view.paused,
        config: Some(pb::QueueConfig {
            default_lease_ms: view.lease_ms as i64,
            default_max_attempts: view.max_attempts,
            default_backoff: Some(backoff_to(&view.backoff)),
            dedup_window_ms: view.dedup_window_ms as i64,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(job_id: &str, attempt: u32) -> pb::LeaseToken {
        pb::LeaseToken {
            job_id: job_id.into(),
            attempt,
        }
    }

    #[test]
    fn bad_tokens_and_nacks_are_named_by_their_place_in_the_request() {
        let err = tokens("acks", &[token("0-1-0", 1), token("nonsense", 1)]).unwrap_err();
        assert!(err.0.starts_with("acks[1].job_id: "), "{}", err.0);
        let err = tokens("acks", &[token("0-1-0", 0)]).unwrap_err();
        assert!(err.0.starts_with("acks[0].attempt is 0"), "{}", err.0);
        assert_eq!(
            tokens("acks", &[token("0-1-0", 2)]).map_err(|e| e.0),
            Ok(vec![(
                raftq_api::JobId {
                    shard: 0,
                    index: 1,
                    position: 0
                },
                2
            )])
        );

        let nack = |job_id: &str, error: String| pb::NackItem {
            token: Some(token(job_id, 1)),
            retry_delay_ms: None,
            error,
            dead: false,
        };
        let err = nacks("nacks", vec![nack("bad", String::new())]).unwrap_err();
        assert!(err.0.starts_with("nacks[0].token.job_id: "), "{}", err.0);
        let long = "e".repeat(MAX_ERROR_BYTES + 1);
        let err = nacks(
            "nacks",
            vec![nack("0-1-0", "ok".into()), nack("0-1-1", long)],
        )
        .unwrap_err();
        assert!(err.0.starts_with("nacks[1].error is "), "{}", err.0);
        assert!(nacks("nacks", vec![nack("0-1-0", "e".repeat(MAX_ERROR_BYTES))]).is_ok());
    }
}
