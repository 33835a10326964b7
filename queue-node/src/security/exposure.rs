//! Start-up check of what a node exposes: a port bound beyond loopback
//! without TLS, or the client port without auth, is open to anyone who
//! can reach it. Warned about at start and on `/readyz`; refused with
//! `require_auth`.

use std::net::ToSocketAddrs;

use crate::config::NodeConfig;

/// Whether an address binds beyond loopback (unresolvable: assume so).
fn beyond_loopback(addr: &str) -> bool {
    match addr.to_socket_addrs() {
        Ok(mut addrs) => addrs.any(|a| !a.ip().is_loopback()),
        Err(_) => true,
    }
}

/// The warnings for `config`, or an error when `require_auth` forbids it.
pub fn check(config: &NodeConfig) -> anyhow::Result<Vec<String>> {
    let mut warnings = Vec::new();
    let tls = config.tls.is_some();
    let auth = config.auth.is_some();
    for (name, addr) in [
        ("listen", &config.listen),
        ("peer_listen", &config.peer_listen),
    ] {
        if !beyond_loopback(addr) {
            continue;
        }
        if !tls {
            warnings.push(format!(
                "{name} {addr} is reachable beyond loopback without TLS: traffic and tokens travel in clear{}",
                if name == "peer_listen" {
                    ", and anyone who reaches it can send Raft messages and call ClusterAdmin"
                } else {
                    ""
                }
            ));
        }
        if !auth && name == "listen" {
            warnings.push(format!(
                "{name} {addr} is reachable beyond loopback without auth: anyone who reaches it may enqueue, fetch, purge and change queues"
            ));
        }
    }
    if config.require_auth && !warnings.is_empty() {
        anyhow::bail!(
            "refusing to start (require_auth): {}; configure `tls` and `auth`, or listen on loopback only",
            warnings.join("; ")
        );
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_quiet_and_wildcards_warn_or_refuse() {
        let mut c = NodeConfig::default();
        assert!(check(&c).unwrap().is_empty());
        c.listen = "0.0.0.0:0".into();
        let warnings = check(&c).unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        c.require_auth = true;
        let e = check(&c).unwrap_err().to_string();
        assert!(
            e.contains("require_auth") && e.contains("without TLS"),
            "{e}"
        );
    }
}
