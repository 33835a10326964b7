//! `Queue.GetShardMap`: each shard's leader and members as this node sees
//! them (for shards held elsewhere, as their members last told the
//! [`Directory`]), with the leaders' client addresses from it.
//!
//! [`Directory`]: crate::directory::Directory

use raftq_api::v1 as pb;

use crate::context::NodeContext;

pub fn build(ctx: &NodeContext, queues: &[String]) -> pb::ShardMap {
    let routing = ctx.routing.get();
    let known = ctx.directory.all();
    let client_addr = |leader: Option<u64>| {
        leader
            .and_then(|l| known.get(&l).cloned())
            .unwrap_or_default()
    };
    let shards = (0..routing.shard_count)
        .map(|id| match ctx.local(id) {
            Some(shard) => {
                let metrics = shard.raft.metrics();
                let m = metrics.borrow();
                pb::ShardRoute {
                    shard: id,
                    leader_id: m.current_leader.unwrap_or(0),
                    leader_addr: client_addr(m.current_leader),
                    term: m.current_term,
                    members: m.membership_config.nodes().map(|(id, _)| *id).collect(),
                    epoch: m.membership_config.log_id().map_or(0, |l| l.index),
                }
            }
            // Held elsewhere: as its members last reported it.
            None => match ctx.directory.remote_shard(id) {
                Some(remote) => pb::ShardRoute {
                    shard: id,
                    leader_id: remote.leader,
                    leader_addr: client_addr(Some(remote.leader)),
                    term: remote.term,
                    epoch: remote.epoch,
                    members: remote.members,
                },
                None => pb::ShardRoute {
                    shard: id,
                    ..Default::default()
                },
            },
        })
        .collect();
    pb::ShardMap {
        shard_count: routing.shard_count,
        pinned: routing
            .pins
            .iter()
            .map(|(queue, shard)| (queue.clone(), *shard))
            .collect(),
        routing_version: routing.version,
        shards,
        nodes: known
            .into_iter()
            .map(|(node_id, client_addr)| pb::NodeAddress {
                node_id,
                client_addr,
            })
            .collect(),
        queues: queues
            .iter()
            .map(|q| (q.clone(), routing.shard_of(q)))
            .collect(),
        node_id: ctx.id,
    }
}
