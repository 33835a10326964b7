//! Membership changes on a shard this node leads, made safe against an
//! operator's typo: a learner that never catches up is removed again, and
//! a voter that is not answering or not caught up is never promoted, so a
//! change can never leave the shard needing a node that is not there.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers};
use raftq_api::v1 as pb;
use raftq_api::v1::cluster_admin_client::ClusterAdminClient;
use tonic::Status;

use crate::context::ShardHandle;
use crate::raft_types::NodeId;
use crate::security::dial::Dialer;

/// How long AddLearner waits for catch-up when the request says 0.
pub const DEFAULT_CATCH_UP: Duration = Duration::from_secs(30);
/// How long a membership change may take to commit.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a would-be voter has to answer a status call.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// A would-be voter may trail the leader's last log entry by at most this
/// many entries (it keeps up with replication, it is not catching up).
const MAX_PROMOTION_LAG: u64 = 1000;

/// Adds `id` at `addr` as a learner and waits until it holds every entry
/// up to the one that added it. On timeout a learner added by this call is
/// removed again.
pub async fn add_learner(
    shard: &ShardHandle,
    id: NodeId,
    addr: &str,
    timeout: Duration,
) -> Result<(), Status> {
    let known = shard
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .get_node(&id)
        .is_some();
    let added = shard
        .raft
        .add_learner(id, BasicNode::new(addr), false)
        .await
        .map_err(|e| {
            Status::failed_precondition(format!("add learner {id} to shard {}: {e}", shard.id))
        })?;
    let needed = added.log_id.index;
    let caught_up = shard
        .raft
        .wait(Some(timeout))
        .metrics(
            |m| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id).copied().flatten())
                    .is_some_and(|matched| matched.index >= needed)
            },
            "the new learner holds the entry that added it",
        )
        .await;
    if caught_up.is_ok() {
        return Ok(());
    }
    let mut outcome = "it was removed again".to_string();
    if !known {
        let remove = ChangeMembers::RemoveNodes(BTreeSet::from([id]));
        if let Err(e) = shard.raft.change_membership(remove, false).await {
            outcome = format!("removing it again failed too ({e}); remove it by hand");
        }
    } else {
        outcome = "it was a member before this call and stays one".into();
    }
    Err(Status::deadline_exceeded(format!(
        "node {id} at {addr} did not catch up on shard {} within {}s (is it running, and is the address right?); {outcome}",
        shard.id,
        timeout.as_secs()
    )))
}

/// Adds `id` at `addr` as a learner and returns once the change is
/// committed; the caller watches it catch up (a move does).
pub async fn add_learner_no_wait(
    shard: &ShardHandle,
    id: NodeId,
    addr: &str,
) -> Result<(), Status> {
    let add = shard.raft.add_learner(id, BasicNode::new(addr), false);
    match tokio::time::timeout(CHANGE_TIMEOUT, add).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Status::failed_precondition(format!(
            "add learner {id} to shard {}: {e}",
            shard.id
        ))),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "adding learner {id} to shard {} did not commit within {}s",
            shard.id,
            CHANGE_TIMEOUT.as_secs()
        ))),
    }
}

/// Removes learner `id`; a voter is refused (change the voters first).
pub async fn remove_learner(shard: &ShardHandle, id: NodeId) -> Result<(), Status> {
    let (is_voter, is_member) = {
        let metrics = shard.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        (
            membership.voter_ids().any(|v| v == id),
            membership.get_node(&id).is_some(),
        )
    };
    if is_voter {
        return Err(Status::failed_precondition(format!(
            "node {id} is a voter of shard {}: change the voters first (ChangeMembership)",
            shard.id
        )));
    }
    if !is_member {
        return Ok(());
    }
    let remove = ChangeMembers::RemoveNodes(BTreeSet::from([id]));
    match tokio::time::timeout(CHANGE_TIMEOUT, shard.raft.change_membership(remove, false)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Status::failed_precondition(format!(
            "remove learner {id} from shard {}: {e}",
            shard.id
        ))),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "removing learner {id} from shard {} did not commit within {}s",
            shard.id,
            CHANGE_TIMEOUT.as_secs()
        ))),
    }
}

/// Makes `voters` the shard's voters, after checking that every new voter
/// is a member, answers at its address and is caught up.
pub async fn change_voters(
    shard: &ShardHandle,
    me: NodeId,
    voters: &BTreeSet<NodeId>,
    retain: bool,
    dialer: &Dialer,
) -> Result<(), Status> {
    let (current, nodes, lags) = {
        let metrics = shard.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let current: BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes: BTreeMap<NodeId, String> = membership
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        let last = m.last_log_index.unwrap_or(0);
        let lags: BTreeMap<NodeId, Option<u64>> = voters
            .iter()
            .map(|id| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).copied().flatten())
                    .map(|l| last.saturating_sub(l.index));
                (*id, matched)
            })
            .collect();
        (current, nodes, lags)
    };
    for id in voters.difference(&current) {
        let Some(addr) = nodes.get(id) else {
            return Err(Status::failed_precondition(format!(
                "node {id} is not a member of shard {}: add it as a learner first (AddLearner)",
                shard.id
            )));
        };
        if *id == me {
            continue;
        }
        match lags.get(id).copied().flatten() {
            Some(lag) if lag <= MAX_PROMOTION_LAG => {}
            Some(lag) => {
                return Err(Status::failed_precondition(format!(
                    "node {id} trails shard {}'s log by {lag} entries: wait until it has caught up, then retry",
                    shard.id
                )))
            }
            None => {
                return Err(Status::failed_precondition(format!(
                    "node {id} ({addr}) has not received shard {}'s log: is it running and reachable at that address?",
                    shard.id
                )))
            }
        }
        probe(*id, addr, dialer).await.map_err(|why| {
            Status::failed_precondition(format!(
                "node {id} ({addr}) does not answer ({why}); a voter that is not there could leave shard {} unable to commit, so it is not promoted",
                shard.id
            ))
        })?;
    }
    let change = shard.raft.change_membership(voters.clone(), retain);
    match tokio::time::timeout(CHANGE_TIMEOUT, change).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Status::failed_precondition(format!(
            "change membership of shard {}: {e}",
            shard.id
        ))),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "the membership change of shard {} did not commit within {}s; it may still complete: check `raftq cluster status`",
            shard.id,
            CHANGE_TIMEOUT.as_secs()
        ))),
    }
}

/// Whether the node at `addr` answers a status call, and is node `id`.
pub async fn probe(id: NodeId, addr: &str, dialer: &Dialer) -> Result<(), String> {
    let channel = dialer.channel(addr).map_err(|e| e.to_string())?;
    let mut client = ClusterAdminClient::new(channel);
    let call = client.status(pb::ClusterStatusRequest::default());
    match tokio::time::timeout(PROBE_TIMEOUT, call).await {
        Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
        Ok(Err(status)) => Err(status.message().to_string()),
        Ok(Ok(status)) if status.get_ref().node_id != id => Err(format!(
            "the node there is node {}",
            status.get_ref().node_id
        )),
        Ok(Ok(_)) => Ok(()),
    }
}
