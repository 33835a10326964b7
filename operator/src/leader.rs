//! Leader election over a `coordination.k8s.io` Lease, so that two operator
//! replicas never reconcile at once. Updates are optimistic (the Lease's
//! resourceVersion): of two replicas racing, one write fails with 409.
//!
//! As in client-go: the holder renews every [`LeaseLock::retry_period`] and
//! stops leading once it has failed to renew for
//! [`LeaseLock::renew_deadline`] (two thirds of the lease), well before a
//! standby may take the lease; on a graceful stop it releases the lease so a
//! standby takes over at once.

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

    /// How often the holder renews, and a standby tries to acquire.
    pub fn retry_period(&self) -> Duration {
        (self.duration / 7).max(Duration::from_millis(200))
    }

    /// How long the holder keeps leading without a successful renewal:
    /// two thirds of the lease, so it has stopped before anyone else may
    /// start.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader lease: cannot read or write it"),
            }
            tokio::time::sleep(self.retry_period()).await;
        }
    }

    /// Renews the lease until someone else holds it or no renewal has
    /// succeeded for [`LeaseLock::renew_deadline`]; returns then, and the
    /// caller must stop reconciling.
    pub async fn hold(&self) -> anyhow::Result<()> {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.retry_period()).await;
            let attempt = tokio::time::timeout(
                self.renew_deadline()
                    .saturating_sub(last_renewed.elapsed())
                    .max(Duration::from_millis(1)),
                self.try_acquire(),
            )
            .await;
            match attempt {
                Ok(Ok(true)) => last_renewed = tokio::time::Instant::now(),
                Ok(Ok(false)) => {
                    anyhow::bail!("lost the leader lease {} to another replica", self.name)
                }
                Ok(Err(e)) if last_renewed.elapsed() < self.renew_deadline() => {
                    tracing::warn!(error = %e, "leader lease: renewal failed; retrying")
                }
                Ok(Err(e)) => anyhow::bail!(
                    "leader lease {}: no renewal for {:?} ({e}); stopping before a standby may take over",
                    self.name,
                    self.renew_deadline()
                ),
                Err(_) => anyhow::bail!(
                    "leader lease {}: no renewal for {:?}; stopping before a standby may take over",
                    self.name,
                    self.renew_deadline()
                ),
            }
        }
    }

    /// Gives the lease up if this replica holds it: it is marked expired
    /// (no holder, duration 1 s) so a standby acquires it on its next try.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.holder.as_str()) {
            return Ok(());
        }
        let mut next = lease.clone();
        next.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..spec
        });
        conflict_is_false(
            self.api
                .replace(&self.name, &PostParams::default(), &next)
                .await,
        )
        .map(|_| ())
    }
}

fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
