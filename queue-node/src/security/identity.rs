//! Who a verified certificate names: its SAN URIs, SAN DNS names and
//! subject CN (a principal's name is matched against them), and whether it
//! is valid for a given host (a peer's certificate must be valid for a
//! member's advertised host).

use rustls_pki_types::{CertificateDer, ServerName};

/// The end-entity certificate a caller presented, already verified
/// against the CA by the TLS handshake.
pub struct PeerCert {
    der: CertificateDer<'static>,
    /// URI SANs, then DNS SANs, then the CN.
    pub names: Vec<String>,
    /// Found valid for a member's host once: membership only grows
    /// while a connection lasts, in all but rare removals.
    pub(crate) member: std::sync::atomic::AtomicBool,
}

impl PeerCert {
    pub fn new(der: CertificateDer<'static>) -> PeerCert {
        let names = match webpki::EndEntityCert::try_from(&der) {
            Ok(cert) => {
                let mut names: Vec<String> = cert.valid_uri_names().map(str::to_owned).collect();
                names.extend(cert.valid_dns_names().map(str::to_owned));
                names.extend(common_name(cert.subject()));
                names
            }
            Err(_) => Vec::new(),
        };
        PeerCert {
            der,
            names,
            member: Default::default(),
        }
    }

    /// Whether the certificate is valid for `host` (a DNS name or an IP
    /// address), by the same rules a client checks a server by.
    pub fn is_valid_for(&self, host: &str) -> bool {
        let Ok(cert) = webpki::EndEntityCert::try_from(&self.der) else {
            return false;
        };
        let Ok(name) = ServerName::try_from(host) else {
            return false;
        };
        cert.verify_is_valid_for_subject_name(&name).is_ok()
    }

    /// Whether the certificate names a host under `domain` (one label
    /// below it: `*.domain` itself, or `x.domain`). How `*.domain` in
    /// `tls.peer_names` admits every pod of a StatefulSet's headless
    /// Service, however many there are.
    pub fn names_a_host_under(&self, domain: &str) -> bool {
        let Ok(cert) = webpki::EndEntityCert::try_from(&self.der) else {
            return false;
        };
        let suffix = format!(".{}", domain.to_ascii_lowercase());
        cert.valid_dns_names().any(|name| {
            let name = name.to_ascii_lowercase();
            name.strip_suffix(&suffix)
                .is_some_and(|label| !label.is_empty() && !label.contains('.'))
        })
    }

    /// The principal a member node acts as (cluster members may do
    /// everything; requests they forward for themselves carry this).
    pub fn node_name(&self) -> String {
        format!(
            "node:{}",
            self.names.first().map_or("unnamed", String::as_str)
        )
    }

    /// How logs and errors name the certificate.
    pub fn describe(&self) -> String {
        if self.names.is_empty() {
            "a certificate with no names".into()
        } else {
            format!("certificate {}", self.names.join(", "))
        }
    }
}

/// The subject's first common name (OID 2.5.4.3), from the raw DER of its
/// RDN sequence.
fn common_name(subject: &[u8]) -> Option<String> {
    const CN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    let at = subject.windows(CN_OID.len()).position(|w| w == CN_OID)?;
    let rest = &subject[at + CN_OID.len()..];
    let (&tag, rest) = rest.split_first()?;
    // UTF8String, PrintableString, IA5String, T61String.
    if !matches!(tag, 0x0c | 0x13 | 0x16 | 0x14) {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let (len, rest) = match len {
        0..=0x7f => (usize::from(len), rest),
        0x81 => {
            let (&n, rest) = rest.split_first()?;
            (usize::from(n), rest)
        }
        _ => return None,
    };
    let value = rest.get(..len)?;
    String::from_utf8(value.to_vec()).ok()
}

/// The host part of `host:port` (an IPv6 host without its brackets).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(params: rcgen::CertificateParams) -> PeerCert {
        let key = rcgen::KeyPair::generate().unwrap();
        PeerCert::new(params.self_signed(&key).unwrap().der().clone())
    }

    #[test]
    fn names_come_from_sans_then_cn() {
        let mut params = rcgen::CertificateParams::new(vec!["worker.example".to_string()]).unwrap();
        params.subject_alt_names.insert(
            0,
            rcgen::SanType::URI("spiffe://raftq/worker".try_into().unwrap()),
        );
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "billing");
        let c = cert(params);
        assert_eq!(
            c.names,
            ["spiffe://raftq/worker", "worker.example", "billing"]
        );
        assert!(c.is_valid_for("worker.example"));
        assert!(!c.is_valid_for("other.example"));
    }

    #[test]
    fn a_wildcard_peer_name_admits_hosts_one_label_under_it() {
        let c = cert(rcgen::CertificateParams::new(vec!["*.q-peers.ns.svc".to_string()]).unwrap());
        assert!(c.names_a_host_under("q-peers.ns.svc"));
        assert!(c.is_valid_for("q-2.q-peers.ns.svc"));
        assert!(!c.names_a_host_under("ns.svc"));
        let c =
            cert(rcgen::CertificateParams::new(vec!["q-0.q-peers.ns.svc".to_string()]).unwrap());
        assert!(c.names_a_host_under("q-peers.ns.svc"));
        assert!(!c.names_a_host_under("other.ns.svc"));
    }

    #[test]
    fn ip_sans_match_ip_hosts() {
        let c = cert(rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap());
        assert!(c.is_valid_for("127.0.0.1"));
        assert!(!c.is_valid_for("127.0.0.2"));
        assert_eq!(host_of("127.0.0.1:7401"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7401"), "::1");
        assert_eq!(host_of("node-0.raftq.ns.svc:7401"), "node-0.raftq.ns.svc");
    }
}
