//! Certificates for TLS tests, made with rcgen: a CA and leaves it signs.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub pem: String,
}

/// A certificate and its key, in PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = issuer.pem();
        Ca { issuer, pem }
    }

    /// A leaf valid for `names` (DNS names or IPs) with common name `cn`.
    pub fn leaf(&self, names: &[&str], cn: &str) -> Leaf {
        self.leaf_with(names, cn, |_| {})
    }

    /// A leaf that expired yesterday.
    pub fn expired(&self, names: &[&str], cn: &str) -> Leaf {
        self.leaf_with(names, cn, |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    fn leaf_with(
        &self,
        names: &[&str],
        cn: &str,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        edit(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Files a node reads: its certificate, key and the CA.
pub struct NodeFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl NodeFiles {
    pub fn write(dir: &Path, ca: &Ca, leaf: &Leaf) -> NodeFiles {
        std::fs::create_dir_all(dir).unwrap();
        let files = NodeFiles {
            cert: dir.join("node.pem"),
            key: dir.join("node-key.pem"),
            ca: dir.join("ca.pem"),
        };
        files.replace(leaf);
        std::fs::write(&files.ca, &ca.pem).unwrap();
        files
    }

    /// Swaps in a new certificate the way a Secret volume does: the new
    /// files appear whole (written aside, then renamed).
    pub fn replace(&self, leaf: &Leaf) {
        for (path, text) in [(&self.key, &leaf.key), (&self.cert, &leaf.cert)] {
            let aside = path.with_extension("new");
            std::fs::write(&aside, text).unwrap();
            std::fs::rename(&aside, path).unwrap();
        }
    }

    pub fn tls_config(&self) -> raftq_node::config::TlsConfig {
        raftq_node::config::TlsConfig {
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
            ca_file: self.ca.clone(),
            client_certs: raftq_node::config::ClientCerts::Optional,
            peer_names: Vec::new(),
        }
    }
}

/// The hex SHA-256 of a token, as the auth file holds it.
pub fn token_hash(token: &str) -> String {
    raftq_node::security::auth::to_hex(&raftq_node::security::auth::token_hash(token))
}
