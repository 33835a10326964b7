//! Fires due timers on an idle shard: when a lease, delay or dedup window
//! is due and no batch carried the shard's time forward, the leader
//! proposes a tiny tick. Deadlines and "now" both come from the shard's
//! [`crate::clock::ShardClock`], so a stepped wall clock cannot make it
//! tick back to back or not at all.

use std::sync::Arc;
use std::time::Duration;

use crate::batcher::Batcher;
use crate::ops::Op;
use crate::raft_types::{NodeId, Raft};
use crate::shard::ShardShared;

pub async fn run(raft: Raft, me: NodeId, batcher: Batcher, shared: Arc<ShardShared>) {
    let mut metrics = raft.metrics();
    loop {
        let applied = shared.applied.notified();
        tokio::pin!(applied);
        applied.as_mut().enable();
        let (is_leader, term) = {
            let m = metrics.borrow();
            (m.current_leader == Some(me), m.current_term)
        };
        let next = shared.state().next_deadline_ms();
        let now = shared.clock.now_ms(term);
        if let Some(due) = next {
            if due <= now && is_leader {
                if batcher.submit(vec![Op::Tick]).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        }
        let wait = match next {
            Some(due) if is_leader => Duration::from_millis(due.saturating_sub(now).clamp(1, 1000)),
            _ => Duration::from_secs(1),
        };
        tokio::select! {
            _ = &mut applied => {}
            _ = tokio::time::sleep(wait) => {}
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}
