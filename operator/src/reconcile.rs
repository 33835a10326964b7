//! The reconciler: one `JobQueue` in, its objects applied, at most one
//! membership step taken, the status written, an [`Action`] out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

use crate::certs::Day;
use crate::crd::JobQueue;
use crate::credentials;
use crate::membership::{self, Hold, NodeAdmin, QueueRef, Step};
use crate::metrics::Metrics;
use crate::objects;
use crate::status::{self, Observation};
use crate::Error;

/// Field manager of every server-side apply, and the finalizer name.
pub const MANAGER: &str = "raftq-operator";
pub const FINALIZER: &str = "raftq.dev/cleanup";

/// How soon to look again while something is moving, and when settled.
const BUSY_REQUEUE: Duration = Duration::from_secs(5);
const IDLE_REQUEUE: Duration = Duration::from_secs(60);

pub struct Context {
    pub client: Client,
    /// Consecutive failed reconciles per `namespace/name`, for the retry backoff.
    pub failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    pub nodes: Arc<dyn NodeAdmin>,
    /// Who the events come from (a recorder per event, so every step is
    /// its own event rather than a repeat count on the first one).
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    /// The operator's own namespace: the queues' NetworkPolicies admit its
    /// pods to the peer port.
    pub operator_namespace: String,
}

pub async fn reconcile(jq: Arc<JobQueue>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = jq
        .namespace()
        .ok_or_else(|| Error::InvalidResource("a JobQueue must be namespaced".into()))?;
    let name = jq.name_any();
    let api: Api<JobQueue> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, jq, |event| async {
        match event {
            Finalizer::Apply(jq) => apply(&jq, &ctx).await,
            Finalizer::Cleanup(jq) => cleanup(&jq, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .reconciled(started.elapsed(), result.as_ref().err());
    if result.is_ok() {
        lock(&ctx.failures).remove(&format!("{ns}/{name}"));
    }
    result
}

/// The watch filter: a JobQueue event reconciles when its spec changed
/// (generation), its finalizers changed (the reconciler adds its own and
/// waits for that write to come back) or it is being deleted; status-only
/// writes, the operator's own, do not.
pub fn worth_reconciling(jq: &JobQueue) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = jq.meta();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.finalizers.hash(&mut hasher);
    meta.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Retries a failed reconcile after 5 s, doubling per consecutive failure
/// up to 5 minutes; a success resets it.
pub fn error_policy(jq: Arc<JobQueue>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", jq.namespace().unwrap_or_default(), jq.name_any());
    let failures = {
        let mut map = lock(&ctx.failures);
        let n = map.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = retry_delay(failures);
    tracing::warn!(queue = %jq.name_any(), %error, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// 5 s, 10 s, 20 s, ... capped at 5 minutes.
pub fn retry_delay(consecutive_failures: u32) -> Duration {
    let exponent = consecutive_failures.saturating_sub(1).min(6);
    Duration::from_secs(5 << exponent).min(Duration::from_secs(300))
}

async fn apply(jq: &JobQueue, ctx: &Context) -> Result<Action, Error> {
    let ns = jq.namespace().unwrap_or_default();
    if jq.spec.paused {
        patch_status(jq, ctx, &status::paused(jq, &now())).await?;
        return Ok(Action::requeue(IDLE_REQUEUE));
    }
    // The CRD's schema refuses these; an older CRD or a forced write might not.
    if let Err(why) = status::check_spec(jq) {
        publish(ctx, jq, EventType::Warning, "InvalidSpec", why.clone()).await?;
        patch_status(jq, ctx, &status::invalid(jq, &why, &now())).await?;
        return Ok(Action::requeue(IDLE_REQUEUE));
    }

    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let names = objects::names(jq);
    let current = sts_api.get_opt(&names.stateful_set).await?;
    let current_replicas = current
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas);
    let ready_replicas = current
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let rollout = current
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(status::rollout);

    // Certificates and auth Secrets first: the pods mount them.
    let credentials = credentials::ensure(
        jq,
        &ctx.client,
        Day::of(k8s_openapi::jiff::Timestamp::now()),
    )
    .await?;
    for note in &credentials.issued {
        publish(
            ctx,
            jq,
            EventType::Normal,
            "CertificateIssued",
            note.clone(),
        )
        .await?;
    }
    if let Some(problem) = &credentials.auth_problem {
        publish(
            ctx,
            jq,
            EventType::Warning,
            "AuthSecretInvalid",
            problem.clone(),
        )
        .await?;
    }
    let queue = QueueRef {
        namespace: ns.clone(),
        name: jq.name_any(),
        tls: credentials.client_tls.clone(),
    };

    let (observed, mut plan) = match credentials.waiting() {
        // The nodes only take the operator over TLS; wait for its
        // certificate rather than call them without.
        Some(why) => {
            let observed = membership::Observed::default();
            let mut plan = membership::plan_for(
                layout(jq),
                jq.spec.replicas,
                status::bootstrapped(jq),
                &observed,
            );
            plan.next = Err(Hold::Waiting(format!("certificates: {why}")));
            (observed, plan)
        }
        None => {
            let mut observed =
                membership::observe(ctx.nodes.as_ref(), &queue, jq.spec.replicas).await;
            if jq.spec.replication_factor.is_some() {
                membership::observe_placement(ctx.nodes.as_ref(), &queue, &mut observed).await;
                // Without them the replicas are still placed, only not
                // spread by zone: the queue keeps running.
                match crate::zones::observe(&ctx.client, jq).await {
                    Ok(zones) => observed.zones = zones,
                    Err(e) => {
                        tracing::warn!(queue = %queue.name, error = %e, "cannot read the pods' zones (RBAC: pods list, nodes get); replicas are placed without them")
                    }
                }
            }
            let plan = membership::plan_for(
                layout(jq),
                jq.spec.replicas,
                status::bootstrapped(jq),
                &observed,
            );
            (observed, plan)
        }
    };
    if observed.nodes.is_empty() {
        // Nothing answers: never shrink blind, a removed pod may still vote.
        plan.stateful_set_replicas = plan
            .stateful_set_replicas
            .max(current_replicas.unwrap_or(0));
    }

    apply_objects(jq, ctx, plan.stateful_set_replicas).await?;

    let mut step_error = None;
    let mut after = observed;
    match &plan.next {
        Ok(step) => match membership::execute(ctx.nodes.as_ref(), &queue, &after, step).await {
            Ok(()) => {
                ctx.metrics.membership_step(step_name(step));
                publish(ctx, jq, EventType::Normal, step_name(step), describe(step)).await?;
                after = membership::observe(ctx.nodes.as_ref(), &queue, jq.spec.replicas).await;
                if jq.spec.replication_factor.is_some() {
                    membership::observe_placement(ctx.nodes.as_ref(), &queue, &mut after).await;
                }
            }
            Err(e) => {
                let message = format!("{}: {}", describe(step), e.message());
                publish(
                    ctx,
                    jq,
                    EventType::Warning,
                    "MembershipStepFailed",
                    message.clone(),
                )
                .await?;
                step_error = Some(message);
            }
        },
        Err(Hold::Refused(why)) => {
            publish(ctx, jq, EventType::Warning, "ChangeRefused", why.clone()).await?;
        }
        Err(_) => {}
    }

    let status = status::compute(
        jq,
        &Observation {
            observed: &after,
            plan: &plan,
            ready_replicas,
            step_error,
            rollout,
            credentials: &credentials,
        },
        &now(),
    );
    patch_status(jq, ctx, &status).await?;
    Ok(match plan.next {
        Err(Hold::Settled) | Err(Hold::Refused(_)) => Action::requeue(IDLE_REQUEUE),
        _ => Action::requeue(BUSY_REQUEUE),
    })
}

async fn apply_objects(jq: &JobQueue, ctx: &Context, replicas: i32) -> Result<(), Error> {
    let ns = jq.namespace().unwrap_or_default();
    let names = objects::names(jq);
    let params = PatchParams::apply(MANAGER).force();
    let client = &ctx.client;
    server_side_apply::<ConfigMap>(
        client,
        &ns,
        &names.config_map,
        &objects::config_map(jq)?,
        &params,
    )
    .await?;
    server_side_apply::<Service>(
        client,
        &ns,
        &names.peer_service,
        &objects::peer_service(jq)?,
        &params,
    )
    .await?;
    server_side_apply::<Service>(
        client,
        &ns,
        &names.client_service,
        &objects::client_service(jq)?,
        &params,
    )
    .await?;
    server_side_apply::<NetworkPolicy>(
        client,
        &ns,
        &names.network_policy,
        &objects::network_policy(jq, &ctx.operator_namespace)?,
        &params,
    )
    .await?;
    server_side_apply::<StatefulSet>(
        client,
        &ns,
        &names.stateful_set,
        &objects::stateful_set(jq, replicas)?,
        &params,
    )
    .await?;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    match objects::pod_disruption_budget(jq)? {
        Some(pdb) => {
            pdbs.patch(&names.pdb, &params, &Patch::Apply(&pdb)).await?;
        }
        None => match pdbs.delete(&names.pdb, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        },
    }
    apply_service_monitor(jq, ctx).await
}

/// The queue's ServiceMonitor while the Prometheus Operator's kind exists
/// (an API server without it answers 404, and the next reconcile tries
/// again, so installing it later needs nothing more); deleted when
/// `spec.monitoring.serviceMonitor.enabled` is false.
async fn apply_service_monitor(jq: &JobQueue, ctx: &Context) -> Result<(), Error> {
    let ns = jq.namespace().unwrap_or_default();
    let name = objects::names(jq).client_service;
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &ns,
        &objects::service_monitor_resource(),
    );
    let outcome = if jq.spec.monitoring.service_monitor.enabled {
        let monitor = objects::service_monitor(jq)?;
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&monitor),
        )
        .await
        .map(|_| ())
    } else {
        api.delete(&name, &DeleteParams::default())
            .await
            .map(|_| ())
    };
    match outcome {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            tracing::debug!(queue = %jq.name_any(), "no ServiceMonitor kind (or none to delete)");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn server_side_apply<K>(
    client: &Client,
    ns: &str,
    name: &str,
    object: &K,
    params: &PatchParams,
) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.patch(name, params, &Patch::Apply(object)).await?;
    Ok(())
}

async fn patch_status(
    jq: &JobQueue,
    ctx: &Context,
    status: &crate::crd::JobQueueStatus,
) -> Result<(), Error> {
    if jq.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<JobQueue> =
        Api::namespaced(ctx.client.clone(), &jq.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": JobQueue::api_version(&()),
        "kind": JobQueue::kind(&()),
        "status": status,
    });
    api.patch_status(
        &jq.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn cleanup(jq: &JobQueue, ctx: &Context) -> Result<Action, Error> {
    patch_status(jq, ctx, &status::deleting(jq, &now())).await?;
    publish(
        ctx,
        jq,
        EventType::Normal,
        "Deleting",
        format!(
            "deleting the objects of {}; its data volumes (data-{}-N) are kept until deleted by hand",
            jq.name_any(),
            objects::names(jq).stateful_set
        ),
    )
    .await?;
    Ok(Action::await_change())
}

async fn publish(
    ctx: &Context,
    jq: &JobQueue,
    type_: EventType,
    reason: &str,
    note: String,
) -> Result<(), Error> {
    tracing::info!(queue = %jq.name_any(), reason, %note, "event");
    Recorder::new(ctx.client.clone(), ctx.reporter.clone())
        .publish(
            &Event {
                type_,
                reason: reason.into(),
                note: Some(note),
                action: "Reconcile".into(),
                secondary: None,
            },
            &jq.object_ref(&()),
        )
        .await?;
    Ok(())
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Bootstrap => "Bootstrapped",
        Step::AddLearner { .. } => "NodeAdded",
        Step::SetVoters { .. } => "VotersChanged",
        Step::DeclareNodes { .. } => "NodesDeclared",
        Step::GrowShards { .. } => "ShardsGrown",
    }
}

fn describe(step: &Step) -> String {
    match step {
        Step::Bootstrap => "created the Raft cluster on pod 0".into(),
        Step::AddLearner { id } => format!(
            "added node {id} (pod {}) as a learner of every shard",
            id - 1
        ),
        Step::SetVoters { voters } => format!("set the voters of every shard to {voters:?}"),
        Step::GrowShards { shard_count } => format!(
            "grew the shard count to {shard_count}: queues that hold jobs stay on their shard, new queues spread over all of them"
        ),
        Step::DeclareNodes { nodes, zones } => {
            let take: Vec<u64> = nodes
                .iter()
                .filter(|(_, d)| !**d)
                .map(|(id, _)| *id)
                .collect();
            let drain: Vec<u64> = nodes
                .iter()
                .filter(|(_, d)| **d)
                .map(|(id, _)| *id)
                .collect();
            let zones = if zones.is_empty() {
                String::new()
            } else {
                format!(" (zones {zones:?}: each shard's replicas spread over them)")
            };
            if drain.is_empty() {
                format!("declared nodes {take:?}{zones}: replicas are moved until they are even over them")
            } else {
                format!("declared nodes {take:?}{zones} and drained {drain:?}: their replicas are moved away before the pods are removed")
            }
        }
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// How the queue's shards come to their nodes.
fn layout(jq: &JobQueue) -> membership::Layout {
    match jq.spec.replication_factor {
        Some(_) => membership::Layout::Placed {
            shards: jq.spec.shards.max(1) as u32,
            initial: crate::objects::initial_shard_count(jq) as u32,
        },
        None => membership::Layout::Grown,
    }
}
