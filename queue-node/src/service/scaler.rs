//! KEDA's external scaler (`externalscaler.ExternalScaler`) on the client
//! port: a `ScaledObject` trigger of `type: external` or `external-push`
//! scales a worker Deployment on a queue's backlog, from zero.
//!
//! Owns what a trigger's metadata means (and refuses what it does not
//! know) and how the metric is made from a queue's counts. Every answer
//! reads those counts through `QueueAdmin.Stats` on this port, so the
//! caller needs the `read` role on the queue, and the read is forwarded to
//! the shard's leader like any other: this module never touches a shard.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use raftq_api::keda as pb;
use raftq_api::keda::external_scaler_server::ExternalScaler;
use raftq_api::v1::queue_admin_server::QueueAdmin;
use raftq_api::v1::{QueueStats, StatsRequest};
use raftq_api::validate;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

use super::{invalid, QueueAdminService};
use crate::security::listener::ConnInfo;

/// How often a push stream (`StreamIsActive`) looks at the queue.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Keys KEDA itself reads from a trigger and passes on to every external
/// scaler with the ones meant for it.
const KEDA_KEYS: [&str; 3] = ["scalerAddress", "enableTLS", "unsafeSsl"];

/// The keys this scaler reads, for the message refusing any other.
const OUR_KEYS: &str = "queue, targetPerReplica, activationBacklog, includeLeased, tokenFromEnv";

/// What one trigger asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Trigger {
    pub queue: String,
    /// The backlog one worker replica is meant to take: the HPA's
    /// average-value target (default 100).
    pub target_per_replica: f64,
    /// The workload is active (scaled up from zero) while the backlog is
    /// above this (default 0: any job).
    pub activation_backlog: u64,
    /// Whether leased jobs (running in workers) count as backlog, so
    /// workers busy with long jobs are not scaled away (default false).
    pub include_leased: bool,
    /// A bearer token, resolved by KEDA from the scale target's environment
    /// (`tokenFromEnv: RAFTQ_TOKEN`): how a trigger authenticates when the
    /// node requires auth and KEDA has no client certificate.
    pub token: Option<String>,
}

impl Trigger {
    pub(crate) fn parse(metadata: &HashMap<String, String>) -> Result<Trigger, Status> {
        let mut trigger = Trigger {
            queue: String::new(),
            target_per_replica: 100.0,
            activation_backlog: 0,
            include_leased: false,
            token: None,
        };
        let bad = |key: &str, value: &str, want: &str| {
            Status::invalid_argument(format!("scalerMetadata {key}: {value:?} is not {want}"))
        };
        for (key, value) in metadata {
            match key.as_str() {
                "queue" => trigger.queue = value.clone(),
                "targetPerReplica" => {
                    trigger.target_per_replica = value
                        .parse::<f64>()
                        .ok()
                        .filter(|t| t.is_finite() && *t > 0.0)
                        .ok_or_else(|| bad(key, value, "a number above 0"))?
                }
                "activationBacklog" => {
                    trigger.activation_backlog = value
                        .parse()
                        .map_err(|_| bad(key, value, "a whole number of jobs"))?
                }
                "includeLeased" => {
                    trigger.include_leased = value
                        .parse()
                        .map_err(|_| bad(key, value, "true or false"))?
                }
                "tokenFromEnv" => trigger.token = Some(value.trim().to_owned()),
                _ if KEDA_KEYS.contains(&key.as_str()) => {}
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "scalerMetadata has {key:?}, which raftq's scaler does not know; it reads {OUR_KEYS}"
                    )))
                }
            }
        }
        if trigger.queue.is_empty() {
            return Err(Status::invalid_argument(
                "scalerMetadata needs queue: the name of the queue whose backlog scales the workers",
            ));
        }
        validate::queue_name(&trigger.queue).map_err(invalid)?;
        Ok(trigger)
    }

    /// The metric's name: the queue's, within the characters Kubernetes
    /// allows in one.
    pub(crate) fn metric_name(&self) -> String {
        let queue: String = self
            .queue
            .chars()
            .map(|c| match c {
                'a'..='z' | '0'..='9' | '-' | '.' => c,
                'A'..='Z' => c.to_ascii_lowercase(),
                _ => '-',
            })
            .collect();
        format!("raftq-backlog-{queue}")
    }

    /// The backlog in `stats`: ready jobs (scheduled ones join them when
    /// due), and leased ones if asked; none while the queue is paused, as
    /// no worker can take its jobs then.
    pub(crate) fn backlog(&self, stats: &QueueStats) -> u64 {
        if stats.paused {
            return 0;
        }
        stats.ready + if self.include_leased { stats.leased } else { 0 }
    }
}

/// The scaler service; one per node, on the client port.
pub struct ScalerService {
    admin: QueueAdminService,
}

impl ScalerService {
    pub fn new(admin: QueueAdminService) -> ScalerService {
        ScalerService { admin }
    }
}

/// Who asked: what `QueueAdmin.Stats` authorizes a read by.
#[derive(Clone)]
struct Asker {
    metadata: MetadataMap,
    conn: Option<ConnInfo>,
}

impl Asker {
    fn of<T>(request: &Request<T>, trigger: &Trigger) -> Result<Asker, Status> {
        let mut metadata = request.metadata().clone();
        if let Some(token) = &trigger.token {
            if metadata.get("authorization").is_none() {
                let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                    Status::invalid_argument(
                        "scalerMetadata tokenFromEnv: the token has characters a header cannot carry",
                    )
                })?;
                metadata.insert("authorization", value);
            }
        }
        Ok(Asker {
            metadata,
            conn: request.extensions().get::<ConnInfo>().cloned(),
        })
    }
}

impl ScalerService {
    async fn backlog(&self, asker: &Asker, trigger: &Trigger) -> Result<u64, Status> {
        let mut extensions = tonic::Extensions::new();
        if let Some(conn) = asker.conn.clone() {
            extensions.insert(conn);
        }
        let request = Request::from_parts(
            asker.metadata.clone(),
            extensions,
            StatsRequest {
                queue: trigger.queue.clone(),
                local: false,
            },
        );
        let stats = self.admin.stats(request).await?.into_inner();
        Ok(stats
            .queues
            .iter()
            .find(|q| q.queue == trigger.queue)
            .map_or(0, |q| trigger.backlog(q)))
    }

    async fn is_active(&self, asker: &Asker, trigger: &Trigger) -> Result<bool, Status> {
        Ok(self.backlog(asker, trigger).await? > trigger.activation_backlog)
    }
}

type ActiveStream = Pin<Box<dyn Stream<Item = Result<pb::IsActiveResponse, Status>> + Send>>;
type SpecStream = Pin<Box<dyn Stream<Item = Result<pb::GetMetricSpecResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for ScalerService {
    async fn is_active(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::IsActiveResponse>, Status> {
        let trigger = Trigger::parse(&request.get_ref().scaler_metadata)?;
        let asker = Asker::of(&request, &trigger)?;
        let result = ScalerService::is_active(self, &asker, &trigger).await?;
        Ok(Response::new(pb::IsActiveResponse { result }))
    }

    type StreamIsActiveStream = ActiveStream;

    /// The activity now, then each change of it, looked at every second.
    async fn stream_is_active(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<ActiveStream>, Status> {
        let trigger = Trigger::parse(&request.get_ref().scaler_metadata)?;
        let asker = Asker::of(&request, &trigger)?;
        // Refused at once (a missing role, a bad queue) rather than in the
        // stream.
        let first = ScalerService::is_active(self, &asker, &trigger).await?;
        let service = ScalerService {
            admin: self.admin.clone(),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let mut last = first;
            if tx
                .send(Ok(pb::IsActiveResponse { result: first }))
                .await
                .is_err()
            {
                return;
            }
            let mut ticks = tokio::time::interval(POLL_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = tx.closed() => return,
                }
                match ScalerService::is_active(&service, &asker, &trigger).await {
                    Ok(now) if now == last => {}
                    Ok(now) => {
                        last = now;
                        if tx
                            .send(Ok(pb::IsActiveResponse { result: now }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    // Passing: an election, a restart. KEDA reopens the
                    // stream after an error, so only a refusal ends it.
                    Err(status) if is_transient(&status) => {
                        tracing::debug!(queue = %trigger.queue, %status, "scaler could not read the queue");
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_metric_spec(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::GetMetricSpecResponse>, Status> {
        let trigger = Trigger::parse(&request.get_ref().scaler_metadata)?;
        #[allow(clippy::cast_possible_truncation)]
        let target_size = trigger.target_per_replica.ceil() as i64;
        Ok(Response::new(pb::GetMetricSpecResponse {
            metric_specs: vec![pb::MetricSpec {
                metric_name: trigger.metric_name(),
                target_size,
                target_size_float: trigger.target_per_replica,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let scaled = request
            .get_ref()
            .scaled_object_ref
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("scaledObjectRef is missing"))?;
        let trigger = Trigger::parse(&scaled.scaler_metadata)?;
        let asker = Asker::of(&request, &trigger)?;
        let backlog = self.backlog(&asker, &trigger).await?;
        Ok(Response::new(pb::GetMetricsResponse {
            metric_values: vec![pb::MetricValue {
                metric_name: trigger.metric_name(),
                metric_value: i64::try_from(backlog).unwrap_or(i64::MAX),
                metric_value_float: backlog as f64,
            }],
        }))
    }

    type StreamMetricSpecStream = SpecStream;

    /// The target comes from the trigger and never changes on its own:
    /// KEDA keeps using `GetMetricSpec` when this is unimplemented.
    async fn stream_metric_spec(
        &self,
        _request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<SpecStream>, Status> {
        Err(Status::unimplemented(
            "raftq's metric targets come from the trigger and do not change; use GetMetricSpec",
        ))
    }
}

fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_trigger_reads_its_keys_and_tolerates_kedas_own() {
        let trigger = Trigger::parse(&metadata(&[
            ("scalerAddress", "raftq.jobs:7400"),
            ("enableTLS", "true"),
            ("queue", "Emails.v2"),
            ("targetPerReplica", "25.5"),
            ("activationBacklog", "3"),
            ("includeLeased", "true"),
        ]))
        .unwrap();
        assert_eq!(trigger.queue, "Emails.v2");
        assert_eq!(trigger.target_per_replica, 25.5);
        assert_eq!(trigger.activation_backlog, 3);
        assert!(trigger.include_leased);
        assert_eq!(trigger.metric_name(), "raftq-backlog-emails.v2");
    }

    #[test]
    fn defaults_follow_the_documented_values() {
        let trigger = Trigger::parse(&metadata(&[("queue", "q")])).unwrap();
        assert_eq!(trigger.target_per_replica, 100.0);
        assert_eq!(trigger.activation_backlog, 0);
        assert!(!trigger.include_leased);
        assert_eq!(trigger.token, None);
    }

    #[test]
    fn unknown_or_bad_settings_are_refused_with_the_key() {
        for (pairs, names) in [
            (&[("queue", "q"), ("queueLength", "5")][..], "queueLength"),
            (
                &[("queue", "q"), ("targetPerReplica", "0")][..],
                "targetPerReplica",
            ),
            (
                &[("queue", "q"), ("targetPerReplica", "NaN")][..],
                "targetPerReplica",
            ),
            (
                &[("queue", "q"), ("activationBacklog", "-1")][..],
                "activationBacklog",
            ),
            (
                &[("queue", "q"), ("includeLeased", "yes")][..],
                "includeLeased",
            ),
            (&[("scalerAddress", "x:1")][..], "queue"),
            (&[("queue", "no spaces")][..], "queue name"),
        ] {
            let refused = Trigger::parse(&metadata(pairs)).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{pairs:?}");
            assert!(
                refused.message().contains(names),
                "{pairs:?}: {}",
                refused.message()
            );
        }
    }

    #[test]
    fn the_backlog_is_ready_jobs_and_leased_ones_if_asked_and_none_while_paused() {
        let stats = QueueStats {
            queue: "q".into(),
            ready: 7,
            scheduled: 100,
            leased: 5,
            ..Default::default()
        };
        let mut trigger = Trigger::parse(&metadata(&[("queue", "q")])).unwrap();
        assert_eq!(trigger.backlog(&stats), 7);
        trigger.include_leased = true;
        assert_eq!(trigger.backlog(&stats), 12);
        let paused = QueueStats {
            paused: true,
            ..stats
        };
        assert_eq!(trigger.backlog(&paused), 0);
    }
}
