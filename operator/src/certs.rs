//! X.509 for `tls.mode: operatorManaged`: a CA per JobQueue, and the
//! certificates it signs for the nodes and for the operator itself. Pure
//! apart from key generation: the caller passes the date.
//!
//! No certificate parsing: what the operator needs to know about a
//! certificate it issued (its names, when it expires) it records beside
//! it, in the Secret's annotations.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};

/// A certificate and its private key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A calendar day (UTC), the granularity of validity here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Day {
    pub year: i16,
    pub month: i8,
    pub day: i8,
}

impl Day {
    pub fn of(ts: k8s_openapi::jiff::Timestamp) -> Day {
        let date = ts.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).date();
        Day {
            year: date.year(),
            month: date.month(),
            day: date.day(),
        }
    }

    fn date(self) -> Result<k8s_openapi::jiff::civil::Date, String> {
        k8s_openapi::jiff::civil::Date::new(self.year, self.month, self.day)
            .map_err(|e| format!("date {self}: {e}"))
    }

    /// `days` later (earlier when negative).
    pub fn plus(self, days: i32) -> Result<Day, String> {
        let date = self
            .date()?
            .checked_add(k8s_openapi::jiff::Span::new().days(days))
            .map_err(|e| format!("{self} + {days} days: {e}"))?;
        Ok(Day {
            year: date.year(),
            month: date.month(),
            day: date.day(),
        })
    }

    pub fn parse(text: &str) -> Option<Day> {
        let date: k8s_openapi::jiff::civil::Date = text.parse().ok()?;
        Some(Day {
            year: date.year(),
            month: date.month(),
            day: date.day(),
        })
    }
}

/// Valid from the start of `from` to the start of `until` (UTC).
fn set_validity(params: &mut CertificateParams, from: Day, until: Day) {
    let at = |d: Day| rcgen::date_time_ymd(d.year.into(), d.month as u8, d.day as u8);
    params.not_before = at(from);
    params.not_after = at(until);
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Days a CA is valid: it is not renewed automatically (docs/OPERATOR.md).
pub const CA_DAYS: i32 = 3650;
/// Days a node or operator certificate is valid.
pub const LEAF_DAYS: i32 = 90;
/// A leaf certificate is renewed when fewer days than this are left.
pub const RENEW_DAYS_BEFORE: i32 = 30;

fn rcgen_error(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The CA's parameters: the same for the CA certificate and for every
/// signature later (rcgen signs with the subject and key identifier these
/// give, so they must match the certificate).
fn ca_params(common_name: &str, from: Day, days: i32) -> Result<CertificateParams, String> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error("CA parameters"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, from.plus(-1)?, from.plus(days)?);
    Ok(params)
}

/// A new self-signed CA named `common_name`, valid from yesterday for
/// [`CA_DAYS`].
pub fn new_ca(common_name: &str, today: Day) -> Result<Issued, String> {
    let key = KeyPair::generate().map_err(rcgen_error("CA key"))?;
    let cert = ca_params(common_name, today, CA_DAYS)?
        .self_signed(&key)
        .map_err(rcgen_error("CA certificate"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub common_name: String,
    /// DNS names (`*.` wildcards allowed) and IP addresses.
    pub names: Vec<String>,
    /// Serves a port (server auth) as well as dialling one (client auth).
    pub server: bool,
}

/// Signs `leaf` with the CA `ca_common_name` / `ca_key_pem`, valid from
/// yesterday for `days`.
pub fn issue(
    ca_common_name: &str,
    ca_key_pem: &str,
    leaf: &Leaf,
    today: Day,
    days: i32,
) -> Result<Issued, String> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(rcgen_error("the CA key"))?;
    let issuer = Issuer::new(ca_params(ca_common_name, today, CA_DAYS)?, ca_key);
    let key = KeyPair::generate().map_err(rcgen_error("certificate key"))?;
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(rcgen_error("certificate parameters"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, leaf.common_name.as_str());
    for name in &leaf.names {
        params.subject_alt_names.push(match name.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                name.as_str()
                    .try_into()
                    .map_err(|e| format!("DNS name {name:?}: {e}"))?,
            ),
        });
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = if leaf.server {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    set_validity(&mut params, today.plus(-1)?, today.plus(days)?);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(rcgen_error("signing the certificate"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A fresh bearer token: 256 bits from the OS's random source (drawn
/// through key generation, which uses it, so no other dependency), hex.
pub fn random_token() -> Result<String, String> {
    let key = KeyPair::generate().map_err(rcgen_error("random source"))?;
    let digest = Sha256::digest(key.serialize_der());
    Ok(format!("rq_{}", hex(&digest)))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a token, hex: what a principals file holds.
pub fn token_sha256(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i16, m: i8, d: i8) -> Day {
        Day {
            year: y,
            month: m,
            day: d,
        }
    }

    #[test]
    fn days_add_across_months_and_years_and_parse_back() {
        assert_eq!(day(2026, 12, 20).plus(20).unwrap(), day(2027, 1, 9));
        assert_eq!(day(2026, 3, 1).plus(-1).unwrap(), day(2026, 2, 28));
        assert_eq!(Day::parse("2027-01-09"), Some(day(2027, 1, 9)));
        assert_eq!(day(2027, 1, 9).to_string(), "2027-01-09");
        assert_eq!(Day::parse("soon"), None);
    }

    #[test]
    fn a_leaf_signed_later_chains_to_the_ca_issued_earlier() {
        // The CA is made on one day and signs on another, from its key
        // alone: the chain must verify (rustls checks it on the nodes).
        let ca = new_ca("raftq shop/orders CA", day(2026, 1, 1)).unwrap();
        let leaf = Leaf {
            common_name: "orders".into(),
            names: vec!["*.orders-peers.shop.svc".into(), "127.0.0.1".into()],
            server: true,
        };
        let node = issue(
            "raftq shop/orders CA",
            &ca.key_pem,
            &leaf,
            day(2026, 6, 1),
            90,
        )
        .unwrap();
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
        let ca_der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap();
        let leaf_der = CertificateDer::from_pem_slice(node.cert_pem.as_bytes()).unwrap();
        let anchor = webpki::anchor_from_trusted_cert(&ca_der).unwrap();
        let end = webpki::EndEntityCert::try_from(&leaf_der).unwrap();
        let chains_at = |unix_seconds: u64| {
            end.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                std::slice::from_ref(&anchor),
                &[],
                UnixTime::since_unix_epoch(std::time::Duration::from_secs(unix_seconds)),
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .is_ok()
        };
        assert!(
            chains_at(1_785_000_000), // 2026-07-25
            "the node certificate chains to the CA"
        );
        end.verify_is_valid_for_subject_name(
            &ServerName::try_from("orders-2.orders-peers.shop.svc").unwrap(),
        )
        .expect("the wildcard covers every pod");
        assert!(
            !chains_at(1_800_000_000), // 2027-01-15: past the 90 days
            "an expired certificate still verifies"
        );
    }

    #[test]
    fn tokens_are_fresh_and_hash_like_the_nodes_expect() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 64);
        assert_eq!(
            token_sha256("s3cret"),
            "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0"
        );
    }
}
