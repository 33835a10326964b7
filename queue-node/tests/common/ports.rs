//! Ports for test nodes, taken below the kernel's ephemeral range: a port
//! picked by binding port 0 comes from that range, and while its node is
//! down for a restart an outgoing connection can be given it, so the node
//! cannot listen again ("Address already in use").

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where the search starts: spread by process so concurrent test
/// binaries seldom try the same ports.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loopback port free now and outside the ephemeral range.
pub fn free_port() -> u16 {
    const LOWEST: u32 = 10_000;
    let ephemeral_start: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .filter(|p| *p > LOWEST + 1_000)
        .unwrap_or(32_768);
    let span = ephemeral_start - LOWEST;
    let offset = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + (offset + n) % span;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    // Every one taken: fall back to the kernel's choice.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
