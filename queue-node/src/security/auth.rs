//! The principals file: who may call, by token hash or certificate name,
//! and their grants of a role on queue patterns. Parsed and checked
//! whole; a file with an error is refused and the previous one stays.
//!
//! ```yaml
//! principals:
//!   - name: billing-worker            # also matched against a client
//!     tokens_sha256: [9f86d081...]    # certificate's SAN URI/DNS or CN
//!     grants:
//!       - { role: consume, queues: ["billing.*"] }
//!       - { role: read, queues: ["*"] }
//!   - name: raftq-operator
//!     grants: [{ role: cluster-admin }]
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Enqueue.
    Produce,
    /// Fetch, Ack, Nack, ExtendLease, WorkerStream.
    Consume,
    /// Stats, GetQueue, GetJob, ListJobs, ListDead.
    Read,
    /// Pause, resume, purge, queue settings, cancel, dead letters.
    QueueAdmin,
    /// Every `ClusterAdmin` call, on the peer port.
    ClusterAdmin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Produce => "produce",
            Role::Consume => "consume",
            Role::Read => "read",
            Role::QueueAdmin => "queue-admin",
            Role::ClusterAdmin => "cluster-admin",
        })
    }
}

/// A queue name, or a prefix ending in `*` (`*` alone: every queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(s: &str) -> Result<Pattern, String> {
        let (body, prefix) = match s.strip_suffix('*') {
            Some(body) => (body, true),
            None => (s, false),
        };
        if body.contains('*') {
            return Err(format!(
                "queue pattern {s:?}: `*` may only end a pattern (exact names and `prefix*`)"
            ));
        }
        if !prefix && s.is_empty() {
            return Err("an empty queue pattern (use \"*\" for every queue)".into());
        }
        Ok(if prefix {
            Pattern::Prefix(body.to_owned())
        } else {
            Pattern::Exact(body.to_owned())
        })
    }

    pub fn matches(&self, queue: &str) -> bool {
        match self {
            Pattern::Exact(q) => q == queue,
            Pattern::Prefix(p) => queue.starts_with(p.as_str()),
        }
    }

    fn is_everything(&self) -> bool {
        matches!(self, Pattern::Prefix(p) if p.is_empty())
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(q) => f.write_str(q),
            Pattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// A principal with its grants.
#[derive(Debug)]
pub struct Principal {
    pub name: Arc<str>,
    grants: Vec<(Role, Pattern)>,
}

impl Principal {
    /// Whether it holds `role` on `queue`; `cluster-admin` ignores the queue.
    pub fn allows(&self, role: Role, queue: &str) -> bool {
        self.grants
            .iter()
            .any(|(r, p)| *r == role && (role == Role::ClusterAdmin || p.matches(queue)))
    }

    /// Whether it holds `role` on every queue (so no per-job lookup of a
    /// queue is needed).
    pub fn allows_everywhere(&self, role: Role) -> bool {
        self.grants
            .iter()
            .any(|(r, p)| *r == role && (role == Role::ClusterAdmin || p.is_everything()))
    }

    /// Its grants: each role with the queue pattern it holds it on.
    pub fn grants(&self) -> impl Iterator<Item = (Role, &Pattern)> + '_ {
        self.grants.iter().map(|(role, pattern)| (*role, pattern))
    }

    /// Whether it holds `role` on any queue at all.
    pub fn allows_somewhere(&self, role: Role) -> bool {
        self.grants.iter().any(|(r, _)| *r == role)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    principals: Vec<PrincipalEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalEntry {
    name: String,
    #[serde(default)]
    tokens_sha256: Vec<String>,
    #[serde(default)]
    grants: Vec<GrantEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantEntry {
    role: Role,
    #[serde(default)]
    queues: Vec<String>,
}

/// Every principal of a file, by token hash and by name.
#[derive(Debug, Default)]
pub struct Principals {
    by_token: HashMap<[u8; 32], Arc<Principal>>,
    by_name: HashMap<String, Arc<Principal>>,
}

/// SHA-256 of a token: what the file holds and what a token is looked up by.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Principals {
    pub fn parse(text: &str) -> Result<Principals, String> {
        Self::parse_all([("", text)])
    }

    /// The principals of several files (`(path, text)`) as one set: a name
    /// or a token hash in two files is an error, as within one. Errors
    /// name the file.
    pub fn parse_all<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Principals, String> {
        let mut entries = Vec::new();
        for (path, text) in files {
            let file: FileFormat = serde_yaml::from_str(text).map_err(|e| match path {
                "" => e.to_string(),
                path => format!("{path}: {e}"),
            })?;
            entries.extend(file.principals);
        }
        let mut principals = Principals::default();
        for entry in entries {
            let name = entry.name;
            if name.is_empty() || name.len() > 256 || !name.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "principal name {name:?}: 1 to 256 printable ASCII characters, no spaces"
                ));
            }
            let mut grants = Vec::new();
            for grant in entry.grants {
                if grant.role == Role::ClusterAdmin {
                    if !grant.queues.is_empty() {
                        return Err(format!("principal {name}: cluster-admin applies to the whole cluster; remove its queues"));
                    }
                    grants.push((Role::ClusterAdmin, Pattern::Prefix(String::new())));
                    continue;
                }
                if grant.queues.is_empty() {
                    return Err(format!(
                        "principal {name}: the {} grant names no queues (use [\"*\"] for every queue)",
                        grant.role
                    ));
                }
                for q in &grant.queues {
                    let pattern =
                        Pattern::parse(q).map_err(|e| format!("principal {name}: {e}"))?;
                    grants.push((grant.role, pattern));
                }
            }
            let principal = Arc::new(Principal {
                name: name.as_str().into(),
                grants,
            });
            for hex in &entry.tokens_sha256 {
                let hash = from_hex(&hex.to_ascii_lowercase()).ok_or_else(|| {
                    format!("principal {name}: {hex:?} is not a SHA-256 hash (64 hex digits); write `printf %s \"$TOKEN\" | sha256sum`")
                })?;
                if let Some(other) = principals.by_token.insert(hash, principal.clone()) {
                    return Err(format!(
                        "principals {} and {name} share a token hash; each token must name one principal",
                        other.name
                    ));
                }
            }
            if principals.by_name.insert(name.clone(), principal).is_some() {
                return Err(format!(
                    "principal {name} is listed twice (in one file or two)"
                ));
            }
        }
        Ok(principals)
    }

    pub fn by_token(&self, token: &str) -> Option<&Arc<Principal>> {
        self.by_token.get(&token_hash(token))
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Principal>> {
        self.by_name.get(name)
    }

    /// The first of `names` (a certificate's) that names a principal.
    pub fn by_any_name<'a>(
        &self,
        names: impl IntoIterator<Item = &'a String>,
    ) -> Option<&Arc<Principal>> {
        names.into_iter().find_map(|n| self.by_name.get(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_match_exact_names_and_prefixes() {
        let hash = to_hex(&token_hash("s3cret"));
        let p = Principals::parse(&format!(
            "principals:\n- name: w\n  tokens_sha256: ['{hash}']\n  grants:\n  - {{role: consume, queues: [emails, 'billing.*']}}\n  - {{role: read, queues: ['*']}}\n- name: op\n  grants: [{{role: cluster-admin}}]\n"
        ))
        .unwrap();
        let w = p.by_token("s3cret").unwrap();
        assert_eq!(&*w.name, "w");
        assert!(w.allows(Role::Consume, "emails"));
        assert!(w.allows(Role::Consume, "billing.eu"));
        assert!(!w.allows(Role::Consume, "emails2"));
        assert!(!w.allows(Role::Produce, "emails"));
        assert!(w.allows(Role::Read, "anything"));
        assert!(w.allows_everywhere(Role::Read));
        assert!(!w.allows_everywhere(Role::Consume));
        assert!(!w.allows(Role::ClusterAdmin, ""));
        assert!(p.by_token("wrong").is_none());
        assert!(p.by_name("op").unwrap().allows(Role::ClusterAdmin, "x"));
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let cases = [
            (
                "principals:\n- name: a\n  tokens_sha256: [abc]\n",
                "not a SHA-256",
            ),
            (
                "principals:\n- name: a\n  grants: [{role: produce}]\n",
                "names no queues",
            ),
            (
                "principals:\n- name: a\n  grants: [{role: produce, queues: ['a*b']}]\n",
                "may only end",
            ),
            ("principals:\n- name: a\n- name: a\n", "listed twice"),
            ("principals:\n- name: 'a b'\n", "printable ASCII"),
            (
                "principals:\n- name: a\n  grants: [{role: cluster-admin, queues: [x]}]\n",
                "whole cluster",
            ),
            (
                "principals:\n- name: a\n  grants: [{role: owner, queues: [x]}]\n",
                "unknown variant",
            ),
        ];
        for (text, expected) in cases {
            let e = Principals::parse(text).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
        let h = to_hex(&token_hash("t"));
        let e = Principals::parse(&format!(
            "principals:\n- name: a\n  tokens_sha256: ['{h}']\n- name: b\n  tokens_sha256: ['{h}']\n"
        ))
        .unwrap_err();
        assert!(e.contains("share a token"), "{e}");
    }

    #[test]
    fn several_files_make_one_set_and_may_not_repeat_a_name() {
        let operator = "principals:\n- name: raftq-operator\n  grants: [{role: cluster-admin}]\n";
        let users = "principals:\n- name: w\n  grants: [{role: consume, queues: ['*']}]\n";
        let p = Principals::parse_all([("op.yaml", operator), ("users.yaml", users)]).unwrap();
        assert!(p.by_name("raftq-operator").is_some() && p.by_name("w").is_some());
        let e =
            Principals::parse_all([("op.yaml", operator), ("users.yaml", operator)]).unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
        let e = Principals::parse_all([("op.yaml", operator), ("users.yaml", "principals: 3")])
            .unwrap_err();
        assert!(e.starts_with("users.yaml: "), "{e}");
    }
}
