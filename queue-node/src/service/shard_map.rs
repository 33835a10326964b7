//! `Queue.GetShardMap`: each shard's leader and members as this node sees
//! them, with the leaders' client addresses from the [`Directory`].
//!
//! [`Directory`]: crate::directory::Directory

use raftq_api::v1 as pb;

use crate::context::NodeContext;

pub fn build(ctx: &NodeContext, queues: &[String]) -> pb::ShardMap {
    let known = ctx.directory.all();
    let shards = ctx
        .shards
        .iter()
        .map(|shard| {
            let metrics = shard.raft.metrics();
            let m = metrics.borrow();
            let leader_id = m.current_leader.unwrap_or(0);
            pb::ShardRoute {
                shard: shard.id,
                leader_id,
                leader_addr: m
                    .current_leader
                    .and_then(|l| known.get(&l).cloned())
                    .unwrap_or_default(),
                term: m.current_term,
                members: m.membership_config.nodes().map(|(id, _)| *id).collect(),
            }
        })
        .collect();
    pb::ShardMap {
        shard_count: ctx.shards.len() as u32,
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
            .map(|q| (q.clone(), ctx.shard_of_queue(q)))
            .collect(),
        node_id: ctx.id,
    }
}
