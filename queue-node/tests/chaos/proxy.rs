//! A fault-injecting TCP proxy in front of every node.
//!
//! Each node advertises its proxy's address, so every connection between
//! nodes (Raft traffic and forwarded client calls) crosses a proxy. The
//! proxy learns which node opened a connection by finding the process that
//! owns the connecting socket (`/proc/net/tcp` and `/proc/<pid>/fd`), so a
//! link between two nodes can be cut in one direction without privileges
//! or network namespaces. Connections from anything else (the test's own
//! clients) are never cut.
//!
//! Faults: cut links (open connections on them are dropped, new ones
//! closed at once), added latency with jitter, and "loss": a chunk held
//! back as long as a TCP retransmission would take.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

pub type NodeId = u64;

#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Directed links (from, to) that carry nothing.
    pub cut: HashSet<(NodeId, NodeId)>,
    pub latency: Duration,
    pub jitter: Duration,
    /// Probability that a chunk is held back for `RETRANSMIT`.
    pub loss: f64,
}

const RETRANSMIT: Duration = Duration::from_millis(200);

/// The faults in force and the node processes they apply to.
#[derive(Clone)]
pub struct Net {
    faults: Arc<watch::Sender<Faults>>,
    pids: Arc<Mutex<HashMap<u32, NodeId>>>,
    stats: Arc<Mutex<NetStats>>,
}

#[derive(Debug, Default, Clone)]
pub struct NetStats {
    pub connections: u64,
    pub dropped: u64,
    pub delayed_chunks: u64,
}

impl Default for Net {
    fn default() -> Self {
        Net::new()
    }
}

impl Net {
    pub fn new() -> Net {
        Net {
            faults: Arc::new(watch::channel(Faults::default()).0),
            pids: Arc::default(),
            stats: Arc::default(),
        }
    }

    pub fn set_pid(&self, node: NodeId, pid: Option<u32>) {
        let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        pids.retain(|_, n| *n != node);
        if let Some(pid) = pid {
            pids.insert(pid, node);
        }
    }

    pub fn update(&self, f: impl FnOnce(&mut Faults)) {
        self.faults.send_modify(f);
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId]) {
        self.update(|f| {
            for x in a {
                for y in b {
                    f.cut.insert((*x, *y));
                    f.cut.insert((*y, *x));
                }
            }
        });
    }

    pub fn heal(&self) {
        self.update(|f| *f = Faults::default());
    }

    pub fn stats(&self) -> NetStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Listens on a free loopback port and forwards to `target` (node
    /// `node`). Returns the proxy's address.
    pub async fn proxy(&self, node: NodeId, target: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let net = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, peer)) = listener.accept().await else {
                    continue;
                };
                let net = net.clone();
                tokio::spawn(async move {
                    let from = net.owner_of(peer, addr.port());
                    net.stats
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .connections += 1;
                    net.serve(inbound, from, node, target).await;
                });
            }
        });
        Ok(addr)
    }

    fn is_cut(&self, from: Option<NodeId>, to: Option<NodeId>) -> bool {
        match (from, to) {
            (Some(a), Some(b)) => self.faults.borrow().cut.contains(&(a, b)),
            _ => false,
        }
    }

    async fn serve(
        &self,
        inbound: TcpStream,
        from: Option<NodeId>,
        to: NodeId,
        target: SocketAddr,
    ) {
        let _ = inbound.set_nodelay(true);
        if self.is_cut(from, Some(to)) || self.is_cut(Some(to), from) {
            self.stats.lock().unwrap_or_else(|e| e.into_inner()).dropped += 1;
            return;
        }
        let Ok(outbound) = TcpStream::connect(target).await else {
            return;
        };
        let _ = outbound.set_nodelay(true);
        let (in_read, in_write) = inbound.into_split();
        let (out_read, out_write) = outbound.into_split();
        let mut faults = self.faults.subscribe();
        let up = self.pump(in_read, out_write, from, Some(to));
        let down = self.pump(out_read, in_write, Some(to), from);
        let cut = async {
            loop {
                if faults.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                if self.is_cut(from, Some(to)) || self.is_cut(Some(to), from) {
                    return;
                }
            }
        };
        tokio::select! {
            _ = up => {}
            _ = down => {}
            _ = cut => {
                self.stats.lock().unwrap_or_else(|e| e.into_inner()).dropped += 1;
            }
        }
    }

    /// Copies one direction, delaying chunks as the faults say while
    /// keeping their order.
    async fn pump(
        &self,
        mut read: tokio::net::tcp::OwnedReadHalf,
        mut write: tokio::net::tcp::OwnedWriteHalf,
        from: Option<NodeId>,
        to: Option<NodeId>,
    ) {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        let reader = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if self.is_cut(from, to) {
                    return;
                }
                let delay = self.delay_for_chunk();
                if tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    return;
                }
            }
        };
        let writer = async {
            let mut not_before = Instant::now();
            while let Some((due, chunk)) = rx.recv().await {
                // Never reorder: a chunk waits for the one before it.
                not_before = not_before.max(due);
                tokio::time::sleep_until(not_before).await;
                if write.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = reader => {}
            _ = writer => {}
        }
    }

    fn delay_for_chunk(&self) -> Duration {
        let f = self.faults.borrow();
        let mut d = f.latency;
        if !f.jitter.is_zero() {
            d += f.jitter.mul_f64(fastrand());
        }
        if f.loss > 0.0 && fastrand() < f.loss {
            d += RETRANSMIT;
            self.stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .delayed_chunks += 1;
        }
        d
    }

    /// The node whose process owns the socket connected from `peer` to our
    /// port `local_port`, if any.
    fn owner_of(&self, peer: SocketAddr, local_port: u16) -> Option<NodeId> {
        let inode = socket_inode(peer.port(), local_port)?;
        let pids: Vec<(u32, NodeId)> = self
            .pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(p, n)| (*p, *n))
            .collect();
        let wanted = format!("socket:[{inode}]");
        for (pid, node) in pids {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == wanted) {
                    return Some(node);
                }
            }
        }
        None
    }
}

/// The inode of the TCP socket whose local port is `local` and remote port
/// is `remote`, from `/proc/net/tcp` and `/proc/net/tcp6`.
fn socket_inode(local: u16, remote: u16) -> Option<u64> {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let port = |col: &str| {
                col.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            if port(cols[1]) == Some(local) && port(cols[2]) == Some(remote) {
                return cols[9].parse().ok();
            }
        }
    }
    None
}

/// A cheap random number in [0, 1) (test jitter needs no crypto).
pub fn fastrand() -> f64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            t | 1
        });
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    })
}
