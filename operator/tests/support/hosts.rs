//! Pod DNS for a cluster without DNS: a marked block of `/etc/hosts` this
//! process owns (`# raftq-test-pods <pid> begin` … `end`), rewritten as pods
//! get addresses and removed on drop. Blocks left by a process that no
//! longer runs are removed too. glibc reads `/etc/hosts` on every lookup,
//! so a name added here resolves at once for the operator and every node.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Mutex;

const HOSTS: &str = "/etc/hosts";
const MARK: &str = "# raftq-test-pods";

pub struct HostsBlock {
    names: Mutex<BTreeMap<String, Ipv4Addr>>,
}

impl HostsBlock {
    /// `None` (with the reason) where `/etc/hosts` cannot be written.
    pub fn claim() -> Result<HostsBlock, String> {
        let block = HostsBlock {
            names: Mutex::default(),
        };
        block
            .write()
            .map_err(|e| format!("{HOSTS} is not writable: {e}"))?;
        Ok(block)
    }

    /// Makes `name` resolve to `ip`.
    pub fn add(&self, name: &str, ip: Ipv4Addr) {
        let changed = self.lock().insert(name.to_string(), ip) != Some(ip);
        if changed {
            self.write().expect("rewrite /etc/hosts");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Ipv4Addr>> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rewrites the file in place (it is often a bind mount, so no rename):
    /// every other line kept, this process's block replaced.
    fn write(&self) -> std::io::Result<()> {
        let text = std::fs::read_to_string(HOSTS)?;
        let mut out = without_blocks(&text, |pid| pid == std::process::id() || !alive(pid));
        let names = self.lock();
        if !names.is_empty() {
            let me = std::process::id();
            out.push_str(&format!("{MARK} {me} begin\n"));
            for (name, ip) in names.iter() {
                out.push_str(&format!("{ip} {name}\n"));
            }
            out.push_str(&format!("{MARK} {me} end\n"));
        }
        std::fs::write(HOSTS, out)
    }
}

impl Drop for HostsBlock {
    fn drop(&mut self) {
        self.lock().clear();
        let _ = self.write();
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `text` without the marked blocks whose owner `drop_owner` picks.
fn without_blocks(text: &str, drop_owner: impl Fn(u32) -> bool) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(MARK) {
            let mut words = rest.split_whitespace();
            let owner = words.next().and_then(|p| p.parse::<u32>().ok());
            match (owner, words.next()) {
                (Some(pid), Some("begin")) if drop_owner(pid) => {
                    skipping = true;
                    continue;
                }
                (Some(pid), Some("end")) if drop_owner(pid) => {
                    skipping = false;
                    continue;
                }
                _ => {}
            }
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
