//! Sending each request straight to its shard's leader.
//!
//! The client reads the shard map (`Queue.GetShardMap`) from the node it
//! connected to, keeps a connection per leader, and sends a queue's
//! requests to the leader of the queue's shard with `x-raftq-route:
//! direct`. A node that no longer leads answers `UNAVAILABLE` with the
//! leader in its trailers: the route is updated and the retry goes there.
//! Where the map says nothing (no leader yet, an address not known, a
//! server without the call) or a leader cannot be reached, requests go to
//! the node connected to, which forwards them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use raftq_api::v1 as pb;
use tonic::transport::{Channel, Endpoint};

/// Trailers of a "not the leader" answer.
const LEADER_SHARD: &str = "x-raftq-leader-shard";
const LEADER_ADDR: &str = "x-raftq-leader-addr";
const LEADER_TERM: &str = "x-raftq-leader-term";
const ROUTING_VERSION: &str = "x-raftq-routing-version";
/// How long a leader that could not be reached is left alone.
const UNREACHABLE_FOR: Duration = Duration::from_secs(30);
/// The map is read again at most this often.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_millis(500);

/// Builds the endpoint of another node with the seed's settings (TLS,
/// timeouts).
pub(crate) type Dial = Box<dyn Fn(&str) -> Option<Endpoint> + Send + Sync>;

pub(crate) struct Router {
    dial: Dial,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    shard_count: u32,
    /// Queues that stayed on their shard when the shard count grew.
    pinned: HashMap<String, u32>,
    /// The version of the queue routing (`shard_count` and `pinned`).
    routing_version: u64,
    /// Per shard: the leader's client address and term.
    leaders: HashMap<u32, (String, u64)>,
    channels: HashMap<String, Channel>,
    unreachable: HashMap<String, Instant>,
    last_read: Option<Instant>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Router")
            .field("shard_count", &state.shard_count)
            .field("leaders", &state.leaders)
            .finish()
    }
}

impl Router {
    pub(crate) fn new(dial: Dial) -> Router {
        Router {
            dial,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the map may be read again now (and notes that it is).
    pub(crate) fn refresh_due(&self) -> bool {
        let mut state = self.lock();
        let due = state
            .last_read
            .is_none_or(|at| at.elapsed() >= REFRESH_AT_MOST_EVERY);
        if due {
            state.last_read = Some(Instant::now());
        }
        due
    }

    /// Takes a map read from a node; an older route for a shard (lower
    /// term) than one already known is ignored.
    pub(crate) fn learn_map(&self, map: &pb::ShardMap) {
        let mut state = self.lock();
        if map.routing_version >= state.routing_version {
            state.shard_count = map.shard_count;
            state.routing_version = map.routing_version;
            state.pinned = map.pinned.clone();
        }
        for route in &map.shards {
            if route.leader_addr.is_empty() {
                continue;
            }
            let newer = state
                .leaders
                .get(&route.shard)
                .is_none_or(|(_, term)| route.term >= *term);
            if newer {
                state
                    .leaders
                    .insert(route.shard, (route.leader_addr.clone(), route.term));
            }
        }
    }

    /// Takes the leader a "not the leader" answer names. Whether it named
    /// one and the map is current (else the map should be read again).
    pub(crate) fn learn_status(&self, status: &tonic::Status) -> bool {
        let meta = status.metadata();
        let text = |key| meta.get(key).and_then(|v| v.to_str().ok());
        let shard = text(LEADER_SHARD).and_then(|s| s.parse::<u32>().ok());
        let term = text(LEADER_TERM).and_then(|s| s.parse::<u64>().ok());
        let (Some(shard), Some(term)) = (shard, term) else {
            return false;
        };
        let routing_version = text(ROUTING_VERSION).and_then(|s| s.parse::<u64>().ok());
        let mut state = self.lock();
        // The shard count grew since the map was read: queues may live
        // elsewhere now.
        if routing_version.is_some_and(|v| v > state.routing_version) {
            return false;
        }
        match text(LEADER_ADDR) {
            Some(addr) => {
                let newer = state
                    .leaders
                    .get(&shard)
                    .is_none_or(|(_, known)| term >= *known);
                if newer {
                    state.leaders.insert(shard, (addr.to_string(), term));
                }
                true
            }
            None => {
                state.leaders.remove(&shard);
                false
            }
        }
    }

    /// A leader's connection failed: send that shard's requests to the
    /// seed for a while.
    pub(crate) fn unreachable(&self, addr: &str) {
        let mut state = self.lock();
        state.unreachable.insert(addr.to_string(), Instant::now());
        state.channels.remove(addr);
    }

    pub(crate) fn shard_of(&self, queue: &str) -> Option<u32> {
        let state = self.lock();
        if let Some(&shard) = state.pinned.get(queue) {
            return Some(shard);
        }
        let count = state.shard_count;
        (count > 0).then(|| raftq_api::shard_of(queue, count))
    }

    /// The leader of `shard` and a connection to it, when known and not
    /// given up on.
    pub(crate) fn leader(&self, shard: u32) -> Option<(String, Channel)> {
        let mut state = self.lock();
        let addr = state.leaders.get(&shard)?.0.clone();
        if let Some(at) = state.unreachable.get(&addr) {
            if at.elapsed() < UNREACHABLE_FOR {
                return None;
            }
            state.unreachable.remove(&addr);
        }
        if let Some(channel) = state.channels.get(&addr) {
            return Some((addr, channel.clone()));
        }
        let channel = (self.dial)(&addr)?.connect_lazy();
        state.channels.insert(addr.clone(), channel.clone());
        Some((addr, channel))
    }
}

/// Whether a failed call's status came from the connection rather than
/// the server (so the node it was sent to may be unreachable).
pub(crate) fn is_transport_failure(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
        || (status.code() == tonic::Code::Unavailable
            && status.metadata().is_empty()
            && status.message().contains("transport"))
}
