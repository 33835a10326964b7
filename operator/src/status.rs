//! The `JobQueue` status a reconcile reports, computed from what it
//! observed. Pure: the caller passes the time.

use crate::crd::{Condition, JobQueue, JobQueueStatus, NodeStatus, ShardStatus, TlsMode};
use crate::credentials::Credentials;
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
    /// A StatefulSet rollout under way (its update revision differs from
    /// its current one): how far it got.
    pub rollout: Option<Rollout>,
    /// The certificates' and auth Secrets' state.
    pub credentials: &'a Credentials,
}

/// A rolling update of the StatefulSet's pods, as its status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub updated: i32,
    pub replicas: i32,
    pub revision: String,
}

/// The rollout a StatefulSet status describes, if one is under way:
/// `updateRevision` differs from `currentRevision` (the controller sets
/// them equal once every pod runs the new template).
pub fn rollout(sts: &k8s_openapi::api::apps::v1::StatefulSetStatus) -> Option<Rollout> {
    let update = sts.update_revision.as_deref().filter(|r| !r.is_empty())?;
    if sts.current_revision.as_deref() == Some(update) {
        return None;
    }
    Some(Rollout {
        updated: sts.updated_replicas.unwrap_or(0),
        replicas: sts.replicas,
        revision: update.to_string(),
    })
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
        Ok(Step::GrowShards { shard_count }) => (
            "Scaling",
            true,
            "GrowingShards",
            format!("growing the shard count to {shard_count}"),
        ),
        Ok(Step::DeclareNodes { nodes, .. }) => (
            "Scaling",
            true,
            "DeclaringNodes",
            format!(
                "declaring nodes {:?} (draining {:?}) to the queue's coordinator",
                nodes.keys().collect::<Vec<_>>(),
                nodes
                    .iter()
                    .filter(|(_, d)| **d)
                    .map(|(id, _)| id)
                    .collect::<Vec<_>>()
            ),
        ),
        Err(Hold::Waiting(why)) if !initialized => ("Pending", true, "Waiting", why.clone()),
        Err(Hold::Waiting(why)) => ("Scaling", true, "Waiting", why.clone()),
        Err(Hold::Refused(why)) => ("Degraded", false, "ChangeRefused", why.clone()),
        Err(Hold::Settled) if seen.rollout.is_some() => {
            let r = seen
                .rollout
                .as_ref()
                .map(|r| (r.updated, r.replicas, r.revision.clone()));
            let (updated, replicas, revision) = r.unwrap_or_default();
            (
                "Updating",
                true,
                "RollingUpdate",
                format!(
                    "rolling the pods to {revision}: {updated} of {replicas} updated, {} of {want} ready",
                    seen.ready_replicas
                ),
            )
        }
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
            match jq.spec.replication_factor {
                Some(factor) => format!(
                    "{factor} voters in each of {} shards, on {want} nodes",
                    jq.spec.shards
                ),
                None => format!("{want} voters in every shard"),
            },
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
    if let Some(certs) = seen.credentials.certificates.as_ref().filter(|c| !c.ready) {
        degraded_reasons.push(("CertificatesNotReady", certs.message.clone()));
    }
    if let Some(problem) = &seen.credentials.auth_problem {
        degraded_reasons.push(("AuthSecretInvalid", problem.clone()));
    }
    if initialized && !leaderless.is_empty() {
        degraded_reasons.push((
            "NoLeader",
            format!("shards without a leader: {leaderless:?}"),
        ));
    }
    // A pod down because the rollout restarts it is progress, not a fault.
    if initialized
        && seen.ready_replicas < want
        && seen.rollout.is_none()
        && matches!(seen.plan.next, Err(Hold::Settled))
    {
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
    let mut conditions = vec![
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
    if let Some(certs) = &seen.credentials.certificates {
        conditions.push(condition(
            "CertificatesReady",
            certs.ready,
            &certs.reason,
            certs.message.clone(),
        ));
    }

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
        nodes: node_counts(&shards),
        initial_members: jq
            .spec
            .replication_factor
            .map(|_| objects::initial_member_count(jq)),
        initial_shards: jq
            .spec
            .replication_factor
            .map(|_| objects::initial_shard_count(jq)),
        moves: seen
            .observed
            .placement
            .iter()
            .flat_map(|p| &p.moves)
            .map(|m| crate::crd::MoveStatus {
                shard: m.shard as i32,
                from_node: m.remove_node as i64,
                to_node: m.add_node as i64,
                phase: m.phase.clone(),
            })
            .collect(),
        conditions,
        endpoint: objects::client_endpoint(jq),
    }
}

/// Each voter's shards and leaderships.
fn node_counts(shards: &[crate::membership::ShardView]) -> Vec<NodeStatus> {
    let mut counts: std::collections::BTreeMap<u64, (i32, i32)> = Default::default();
    for shard in shards {
        for voter in &shard.voters {
            counts.entry(*voter).or_default().0 += 1;
        }
        if shard.leader != 0 {
            counts.entry(shard.leader).or_default().1 += 1;
        }
    }
    counts
        .into_iter()
        .map(|(node, (replicas, leads))| NodeStatus {
            node_id: node as i64,
            replicas,
            leads,
        })
        .collect()
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
    match s.replication_factor {
        None if !(1..=7).contains(&s.replicas) || s.replicas % 2 == 0 => {
            return Err(format!(
                "spec.replicas is {}: it must be odd, from 1 to 7 (Raft needs a majority), \
                 or set spec.replicationFactor",
                s.replicas
            ))
        }
        Some(f) if ![1, 3, 5].contains(&f) => {
            return Err(format!(
                "spec.replicationFactor is {f}: it must be 1, 3 or 5"
            ))
        }
        Some(f) if !(f..=99).contains(&s.replicas) => {
            return Err(format!(
                "spec.replicas is {}: with replicationFactor {f} it must be from {f} to 99",
                s.replicas
            ))
        }
        _ => {}
    }
    // Shard 0's voters: replicationFactor of the nodes, once created.
    if let (Some(f), Some(st)) = (s.replication_factor, jq.status.as_ref()) {
        let created = st.voters.len() as i32;
        if created > 0 && created != f {
            return Err(format!(
                "spec.replicationFactor is {f} but the cluster was created with {created} \
                 voters per shard; set it back to {created}"
            ));
        }
    }
    if !(1..=64).contains(&s.shards) {
        return Err(format!(
            "spec.shards is {}: it must be from 1 to 64",
            s.shards
        ));
    }
    // A placed queue's status lists the shards of the nodes that answered:
    // only a shard beyond the spec tells of a change there.
    let running = jq.status.as_ref().map_or(0, |st| st.shards.len());
    let beyond = jq
        .status
        .as_ref()
        .is_some_and(|st| st.shards.iter().any(|sh| sh.shard >= s.shards));
    let differs = s.replication_factor.is_none() && running > 0 && running != s.shards as usize;
    if beyond && s.replication_factor.is_some() {
        let count = jq
            .status
            .as_ref()
            .and_then(|st| st.shards.iter().map(|sh| sh.shard + 1).max())
            .unwrap_or(0);
        return Err(format!(
            "spec.shards is {} but the cluster has {count} shards: the shard count only grows; \
             set it to {count} or more",
            s.shards
        ));
    }
    if beyond || differs {
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
    if !is_scrape_interval(&s.monitoring.service_monitor.interval) {
        return Err(format!(
            "spec.monitoring.serviceMonitor.interval is {:?}: it must be a duration such as \
             30s, 1m or 1m30s",
            s.monitoring.service_monitor.interval
        ));
    }
    check_security(s)
}

/// A Prometheus duration as the CRD's pattern takes it: one or more
/// number-and-unit pairs (`ms`, `s`, `m`, `h`).
fn is_scrape_interval(text: &str) -> bool {
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

/// TLS and auth settings that are inconsistent, or unsafe without the
/// insecure switch (the CRD's CEL rules say the same; this guards
/// against an older CRD).
fn check_security(s: &crate::crd::JobQueueSpec) -> Result<(), String> {
    if s.tls_secret_ref.is_some() {
        return Err(
            "spec.tlsSecretRef was replaced by spec.tls: set tls.mode: secret, tls.secretName \
             and tls.operatorSecretName, and remove tlsSecretRef"
                .into(),
        );
    }
    if s.auth_secret_ref.is_some() {
        return Err(
            "spec.authSecretRef was replaced by spec.auth.secretRef (a Secret with \
             principals.yaml); remove authSecretRef"
                .into(),
        );
    }
    let tls = &s.tls;
    if tls.mode == TlsMode::Disabled && !tls.allow_insecure {
        return Err(
            "spec.tls.mode is disabled: jobs and tokens would cross the network in clear \
             text; set tls.allowInsecure: true to accept that"
                .into(),
        );
    }
    if !s.auth.enabled && !tls.allow_insecure {
        return Err(
            "spec.auth.enabled is false: anyone who reaches the client port could do \
             anything; set tls.allowInsecure: true to accept that"
                .into(),
        );
    }
    let mode = match tls.mode {
        TlsMode::OperatorManaged => "operatorManaged",
        TlsMode::CertManager => "certManager",
        TlsMode::Secret => "secret",
        TlsMode::Disabled => "disabled",
    };
    let fields = [
        ("issuerRef", tls.issuer_ref.is_some(), TlsMode::CertManager),
        ("secretName", tls.secret_name.is_some(), TlsMode::Secret),
        (
            "caSecretName",
            tls.ca_secret_name.is_some(),
            TlsMode::Secret,
        ),
        (
            "operatorSecretName",
            tls.operator_secret_name.is_some(),
            TlsMode::Secret,
        ),
    ];
    for (field, set, used_by) in fields {
        if set && tls.mode != used_by {
            return Err(format!(
                "spec.tls.{field} is not used with tls.mode: {mode}; remove it or change the mode"
            ));
        }
    }
    let required: &[(&str, bool)] = match tls.mode {
        TlsMode::CertManager => &[("issuerRef", tls.issuer_ref.is_some())],
        TlsMode::Secret => &[
            ("secretName", tls.secret_name.is_some()),
            ("operatorSecretName", tls.operator_secret_name.is_some()),
        ],
        _ => &[],
    };
    for (field, set) in required {
        if !set {
            return Err(format!("spec.tls.mode: {mode} needs spec.tls.{field}"));
        }
    }
    if let Some(issuer) = &tls.issuer_ref {
        if issuer.kind != "Issuer" && issuer.kind != "ClusterIssuer" {
            return Err(format!(
                "spec.tls.issuerRef.kind is {:?}: it must be Issuer or ClusterIssuer",
                issuer.kind
            ));
        }
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

/// The status while a JobQueue is being deleted (its objects go with it).
pub fn deleting(jq: &JobQueue, now: &str) -> JobQueueStatus {
    let why =
        "the JobQueue is being deleted: its objects are removed with it; data volumes are kept";
    with_condition(jq, "Deleting", ("Progressing", true, "Deleting", why), now)
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

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::StatefulSetStatus;

    use super::*;
    use crate::crd::JobQueueSpec;
    use crate::membership::{Hold, Observed, Plan};

    #[test]
    fn security_settings_that_do_not_fit_are_refused_with_a_reason() {
        assert_eq!(check_spec(&queue(3)), Ok(()));
        let refused = |spec: serde_json::Value, expected: &str| {
            let mut jq = queue(3);
            jq.spec = serde_json::from_value(spec).expect("a spec");
            let why = check_spec(&jq).expect_err("refused");
            assert!(why.contains(expected), "{why}");
        };
        refused(
            serde_json::json!({"tlsSecretRef": {"name": "t"}}),
            "replaced by spec.tls",
        );
        refused(
            serde_json::json!({"authSecretRef": {"name": "t"}}),
            "replaced by spec.auth.secretRef",
        );
        refused(
            serde_json::json!({"tls": {"mode": "disabled"}}),
            "allowInsecure",
        );
        refused(
            serde_json::json!({"auth": {"enabled": false}}),
            "allowInsecure",
        );
        refused(
            serde_json::json!({"tls": {"mode": "certManager"}}),
            "needs spec.tls.issuerRef",
        );
        refused(
            serde_json::json!({"tls": {"mode": "secret", "secretName": "s"}}),
            "needs spec.tls.operatorSecretName",
        );
        refused(
            serde_json::json!({"tls": {"secretName": "s"}}),
            "spec.tls.secretName is not used with tls.mode: operatorManaged",
        );
        refused(
            serde_json::json!({"tls": {"mode": "certManager", "issuerRef": {"name": "i", "kind": "Vault"}}}),
            "Issuer or ClusterIssuer",
        );
        let mut insecure = queue(3);
        insecure.spec = serde_json::from_value(serde_json::json!({
            "tls": {"mode": "disabled", "allowInsecure": true}, "auth": {"enabled": false}
        }))
        .expect("a spec");
        assert_eq!(check_spec(&insecure), Ok(()));
    }

    #[test]
    fn a_scrape_interval_is_a_prometheus_duration() {
        for good in ["30s", "1m", "1m30s", "500ms", "2h"] {
            assert!(is_scrape_interval(good), "{good}");
        }
        for bad in ["", "soon", "30", "s", "1.5s", "30 s", "-1s"] {
            assert!(!is_scrape_interval(bad), "{bad:?}");
        }
        let mut jq = queue(3);
        jq.spec.monitoring.service_monitor.interval = "soon".into();
        let why = check_spec(&jq).expect_err("refused");
        assert!(
            why.contains("spec.monitoring.serviceMonitor.interval"),
            "{why}"
        );
    }

    fn queue(replicas: i32) -> JobQueue {
        let spec: JobQueueSpec =
            serde_json::from_value(serde_json::json!({ "replicas": replicas }))
                .expect("a minimal spec");
        JobQueue::new("q", spec)
    }

    fn sts(current: &str, update: &str, updated: i32) -> StatefulSetStatus {
        StatefulSetStatus {
            replicas: 3,
            current_revision: Some(current.into()),
            update_revision: Some(update.into()),
            updated_replicas: Some(updated),
            ..StatefulSetStatus::default()
        }
    }

    #[test]
    fn a_rollout_is_progress_not_degradation() {
        assert_eq!(rollout(&sts("r1", "r1", 3)), None);
        let rolling = rollout(&sts("r1", "r2", 1)).expect("a rollout");
        assert_eq!((rolling.updated, rolling.replicas), (1, 3));

        let jq = queue(3);
        let observed = Observed::default();
        let plan = Plan {
            next: Err(Hold::Settled),
            stateful_set_replicas: 3,
        };
        let credentials = Credentials::default();
        let seen = |rollout| Observation {
            observed: &observed,
            plan: &plan,
            ready_replicas: 2,
            step_error: None,
            rollout,
            credentials: &credentials,
        };
        let during = compute(&jq, &seen(Some(rolling)), "t");
        assert_eq!(during.phase, "Updating");
        let cond = |s: &JobQueueStatus, t: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == t)
                .map(|c| (c.status.clone(), c.reason.clone()))
        };
        assert_eq!(
            cond(&during, "Progressing"),
            Some(("True".into(), "RollingUpdate".into()))
        );
        assert_ne!(
            cond(&during, "Degraded").map(|c| c.1),
            Some("NodesNotReady".into())
        );
        // The same two-of-three without a rollout is a fault.
        let after = compute(&jq, &seen(None), "t");
        assert_eq!(after.phase, "Degraded");
        assert_eq!(
            cond(&after, "Progressing"),
            Some(("False".into(), "NodesNotReady".into()))
        );
    }
}
