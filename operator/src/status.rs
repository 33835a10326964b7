//! The `JobQueue` status a reconcile reports, computed from what it
//! observed. Pure: the caller passes the time.

use crate::crd::{Condition, JobQueue, JobQueueStatus, ShardStatus};
use crate::membership::{Hold, Observed, Plan, Step};
use crate::objects;

/// What a reconcile saw and did, the input of [`compute`].
pub struct Observation<'a> {
    pub observed: &'a Observed,
    pub plan: &'a Plan,
    /// The StatefulSet's ready pods.
    pub ready_replicas: i32,
    /// The step this reconcile performed and its outcome.
    pub step_error: Option<String>,
}

pub fn compute(jq: &JobQueue, seen: &Observation<'_>, now: &str) -> JobQueueStatus {
    let generation = jq.metadata.generation.unwrap_or(0);
    let old = jq.status.clone().unwrap_or_default();
    let shards = seen.observed.shards();
    let leaderless: Vec<u32> = shards
        .iter()
        .filter(|s| s.leader == 0)
        .map(|s| s.shard)
        .collect();
    let initialized = seen.observed.initialized();
    let available = initialized && !shards.is_empty() && leaderless.is_empty();
    let want = jq.spec.replicas;

    let (phase, progressing, progress_reason, progress_message) = match &seen.plan.next {
        Ok(Step::Bootstrap) => (
            "Bootstrapping",
            true,
            "Bootstrapping",
            "creating the Raft cluster on pod 0".into(),
        ),
        Ok(Step::AddLearner { id }) => (
            "Scaling",
            true,
            "AddingNode",
            format!("adding node {id} (pod {}) to every shard", id - 1),
        ),
        Ok(Step::SetVoters { voters }) => (
            "Scaling",
            true,
            "ChangingVoters",
            format!("setting the voters of every shard to {voters:?}"),
        ),
        Err(Hold::Waiting(why)) if !initialized => ("Pending", true, "Waiting", why.clone()),
        Err(Hold::Waiting(why)) => ("Scaling", true, "Waiting", why.clone()),
        Err(Hold::Refused(why)) => ("Degraded", false, "ChangeRefused", why.clone()),
        Err(Hold::Settled) if seen.ready_replicas < want => (
            "Degraded",
            false,
            "NodesNotReady",
            format!("{} of {want} nodes ready", seen.ready_replicas),
        ),
        Err(Hold::Settled) => (
            "Running",
            false,
            "Settled",
            format!("{want} voters in every shard"),
        ),
    };
    let phase = if !available && phase == "Running" {
        "Degraded"
    } else {
        phase
    };

    let mut degraded_reasons = Vec::new();
    if let Some(e) = &seen.step_error {
        degraded_reasons.push(("StepFailed", e.clone()));
    }
    if let Err(Hold::Refused(why)) = &seen.plan.next {
        degraded_reasons.push(("ChangeRefused", why.clone()));
    }
    if initialized && !leaderless.is_empty() {
        degraded_reasons.push((
            "NoLeader",
            format!("shards without a leader: {leaderless:?}"),
        ));
    }
    if initialized && seen.ready_replicas < want && matches!(seen.plan.next, Err(Hold::Settled)) {
        degraded_reasons.push((
            "NodesNotReady",
            format!("{} of {want} nodes ready", seen.ready_replicas),
        ));
    }

    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let since = old
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.to_string());
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time: since,
            observed_generation: generation,
        }
    };
    let conditions = vec![
        if available {
            condition(
                "Available",
                true,
                "LeadersElected",
                format!("all {} shards have a leader", shards.len()),
            )
        } else if !initialized {
            condition(
                "Available",
                false,
                "NotBootstrapped",
                "the Raft cluster is not created yet".into(),
            )
        } else {
            condition(
                "Available",
                false,
                "NoLeader",
                format!("shards without a leader: {leaderless:?}"),
            )
        },
        condition(
            "Progressing",
            progressing,
            progress_reason,
            progress_message,
        ),
        match degraded_reasons.first() {
            Some((reason, message)) => condition("Degraded", true, reason, message.clone()),
            None => condition("Degraded", false, "Healthy", "no problem seen".into()),
        },
    ];

    let voters = shards
        .first()
        .map(|s| s.voters.iter().map(|v| *v as i64).collect())
        .unwrap_or(old.voters);
    JobQueueStatus {
        observed_generation: generation,
        ready_replicas: seen.ready_replicas,
        phase: phase.into(),
        voters,
        shards: shards
            .iter()
            .map(|s| ShardStatus {
                shard: s.shard as i32,
                leader: s.leader as i64,
                term: s.term as i64,
                applied_index: s.applied_index as i64,
            })
            .collect(),
        conditions,
        endpoint: objects::client_endpoint(jq),
    }
}

/// True once the operator created the Raft cluster of this resource: it
/// recorded voters in the status. A later empty membership is then reported
/// as lost data, never bootstrapped again.
pub fn bootstrapped(jq: &JobQueue) -> bool {
    jq.status.as_ref().is_some_and(|s| !s.voters.is_empty())
}

/// What the reconciler refuses to act on even if the API server let it in:
/// a spec it cannot run safely. The message says what to change.
pub fn check_spec(jq: &JobQueue) -> Result<(), String> {
    let s = &jq.spec;
    if !(1..=7).contains(&s.replicas) || s.replicas % 2 == 0 {
        return Err(format!(
            "spec.replicas is {}: it must be odd, from 1 to 7 (Raft needs a majority)",
            s.replicas
        ));
    }
    if !(1..=64).contains(&s.shards) {
        return Err(format!(
            "spec.shards is {}: it must be from 1 to 64",
            s.shards
        ));
    }
    let running = jq.status.as_ref().map_or(0, |st| st.shards.len());
    if running > 0 && running != s.shards as usize {
        return Err(format!(
            "spec.shards changed from {running} to {}: the nodes' data is laid out by shard; \
             set it back to {running}",
            s.shards
        ));
    }
    let b = &s.batching;
    if b.linger_min_micros > b.linger_max_micros {
        return Err(format!(
            "spec.batching.lingerMinMicros ({}) is above lingerMaxMicros ({})",
            b.linger_min_micros, b.linger_max_micros
        ));
    }
    Ok(())
}

/// The status for a spec [`check_spec`] refused: the last observation is
/// kept, the Degraded condition says what is wrong.
pub fn invalid(jq: &JobQueue, why: &str, now: &str) -> JobQueueStatus {
    with_condition(jq, "Degraded", ("Degraded", true, "InvalidSpec", why), now)
}

/// The status while `spec.paused` is set: the last observation is kept
/// (nothing is asked of the nodes), nothing is progressing.
pub fn paused(jq: &JobQueue, now: &str) -> JobQueueStatus {
    let why = "spec.paused is set: the operator changes nothing";
    with_condition(jq, "Paused", ("Progressing", false, "Paused", why), now)
}

/// The last status with `phase` and one condition replaced by
/// `(type, true?, reason, message)`.
fn with_condition(
    jq: &JobQueue,
    phase: &str,
    (type_, ok, reason, message): (&str, bool, &str, &str),
    now: &str,
) -> JobQueueStatus {
    let mut status = jq.status.clone().unwrap_or_default();
    let generation = jq.metadata.generation.unwrap_or(0);
    let state = if ok { "True" } else { "False" };
    let since = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == state)
        .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
    status.observed_generation = generation;
    status.phase = phase.into();
    status.conditions.retain(|c| c.type_ != type_);
    status.conditions.push(Condition {
        type_: type_.into(),
        status: state.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: since,
        observed_generation: generation,
    });
    status
}
