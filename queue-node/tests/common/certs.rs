//! Certificates for TLS tests, made with rcgen: a CA and leaves it signs.
//! Shared by the test crates that include it, each using a part.
#![allow(dead_code)]

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

/// A whole TLS + auth setup for cluster tests: a CA, one certificate
/// every node uses (valid for 127.0.0.1), an auth file with a `worker`
/// token that may do everything to every queue and an `ops` client
/// certificate with `cluster-admin`.
pub struct TestTls {
    ca: Ca,
    ops: Leaf,
    files: NodeFiles,
    auth: PathBuf,
}

pub const WORKER_TOKEN: &str = "worker-token";

impl TestTls {
    pub fn new(dir: &Path) -> TestTls {
        let ca = Ca::new("test cluster CA");
        let files = NodeFiles::write(dir, &ca, &ca.leaf(&["127.0.0.1"], "node"));
        let auth = dir.join("auth.yaml");
        std::fs::write(
            &auth,
            format!(
                "principals:\n  - name: worker\n    tokens_sha256: ['{}']\n    grants:\n      - {{ role: produce, queues: ['*'] }}\n      - {{ role: consume, queues: ['*'] }}\n      - {{ role: read, queues: ['*'] }}\n      - {{ role: queue-admin, queues: ['*'] }}\n  - name: ops\n    grants: [{{ role: cluster-admin }}]\n",
                token_hash(WORKER_TOKEN)
            ),
        )
        .unwrap();
        TestTls {
            ops: ca.leaf(&[], "ops"),
            ca,
            files,
            auth,
        }
    }

    /// `queue-node` flags: TLS on both ports, client certificates
    /// optional, auth on.
    pub fn node_args(&self) -> Vec<String> {
        [
            "--tls-cert",
            &self.files.cert.display().to_string(),
            "--tls-key",
            &self.files.key.display().to_string(),
            "--tls-ca",
            &self.files.ca.display().to_string(),
            "--client-certs",
            "optional",
            "--auth-file",
            &self.auth.display().to_string(),
        ]
        .map(String::from)
        .to_vec()
    }

    /// The CA file clients trust.
    pub fn ca_file(&self) -> &Path {
        &self.files.ca
    }

    /// The `worker` principal on a client port, over TLS.
    pub fn worker_options(&self) -> raftq_client::ConnectOptions {
        raftq_client::ConnectOptions::new()
            .tls(raftq_client::TlsOptions::new().ca_cert_pem(self.ca.pem.clone()))
            .token(WORKER_TOKEN)
    }

    /// The `ops` principal (a client certificate) on a peer port.
    pub fn ops_options(&self) -> raftq_client::ConnectOptions {
        raftq_client::ConnectOptions::new().tls(
            raftq_client::TlsOptions::new()
                .ca_cert_pem(self.ca.pem.clone())
                .client_identity_pem(self.ops.cert.clone(), self.ops.key.clone()),
        )
    }
}
