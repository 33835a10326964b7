//! Leader election over a `coordination.k8s.io` Lease, so that two operator
//! replicas never reconcile at once. Updates are optimistic (the Lease's
//! resourceVersion): of two replicas racing, one write fails with 409.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};

pub struct LeaseLock {
    pub api: Api<Lease>,
    pub name: String,
    /// This replica's identity (its pod name).
    pub holder: String,
    pub duration: Duration,
}

impl LeaseLock {
    /// Takes the lease if it is free or expired, renews it if it is ours.
    /// `Ok(true)` while this replica holds it.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.holder.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.holder.as_str());
        let held_for = spec.lease_duration_seconds.unwrap_or(seconds);
        let expired = match &spec.renew_time {
            Some(MicroTime(renewed)) => {
                now.duration_since(*renewed) > SignedDuration::from_secs(i64::from(held_for))
            }
            None => true,
        };
        if !mine && !expired && spec.holder_identity.is_some() {
            return Ok(false);
        }
        let mut next = lease.clone();
        next.spec = Some(LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: if mine {
                spec.acquire_time
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(!mine)),
            ..spec
        });
        conflict_is_false(
            self.api
                .replace(&self.name, &PostParams::default(), &next)
                .await,
        )
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader lease: cannot read or write it"),
            }
            tokio::time::sleep(self.duration / 3).await;
        }
    }

    /// Renews the lease until a renewal fails or someone else holds it;
    /// returns then, and the caller must stop reconciling.
    pub async fn hold(&self) -> anyhow::Result<()> {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_acquire().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    anyhow::bail!("lost the leader lease {} to another replica", self.name)
                }
                Err(e) if last_renewed.elapsed() < self.duration => {
                    tracing::warn!(error = %e, "leader lease: renewal failed; retrying")
                }
                Err(e) => anyhow::bail!("leader lease {} expired: {e}", self.name),
            }
        }
    }
}

fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
