//! `raftq dev-certs`: a CA, a node certificate, a client certificate and an
//! admin token, written to a directory, to try TLS and auth on one machine
//! (and for `raftq bench --secure`). Production clusters use the
//! operator's certificates, cert-manager's or their own.

use std::path::{Path, PathBuf};

use anyhow::Context;
use raftq_client::{ConnectOptions, TlsOptions};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use sha2::{Digest, Sha256};

/// The files written, by path.
pub struct DevCerts {
    pub ca_cert: PathBuf,
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub token_file: PathBuf,
    pub auth_file: PathBuf,
    token: String,
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom for a token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl DevCerts {
    /// Writes a CA, a node certificate valid for `hosts`, a client
    /// certificate (CN `raftq-admin`), a token and an auth file that gives
    /// both every role, into `dir`.
    pub fn create(dir: &Path, hosts: &[&str]) -> anyhow::Result<DevCerts> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "raftq development CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let leaf = |names: Vec<String>, cn: &str| -> anyhow::Result<(String, String)> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(names)?;
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = params.signed_by(&key, &ca)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (node_pem, node_key) =
            leaf(hosts.iter().map(|h| h.to_string()).collect(), "raftq-node")?;
        let (client_pem, client_key) = leaf(Vec::new(), "raftq-admin")?;
        let token = random_token()?;
        let hash: String = Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let certs = DevCerts {
            ca_cert: dir.join("ca.pem"),
            node_cert: dir.join("node.pem"),
            node_key: dir.join("node-key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
            token_file: dir.join("token"),
            auth_file: dir.join("auth.yaml"),
            token,
        };
        write(&certs.ca_cert, &ca.pem())?;
        write(&certs.node_cert, &node_pem)?;
        write(&certs.node_key, &node_key)?;
        write(&certs.client_cert, &client_pem)?;
        write(&certs.client_key, &client_key)?;
        write(&certs.token_file, &certs.token)?;
        let every_role = "    grants:\n      - { role: produce, queues: [\"*\"] }\n      - { role: consume, queues: [\"*\"] }\n      - { role: read, queues: [\"*\"] }\n      - { role: queue-admin, queues: [\"*\"] }\n      - { role: cluster-admin }\n";
        write(
            &certs.auth_file,
            &format!(
                "# Principals of a development cluster (raftq dev-certs).\nprincipals:\n  - name: admin\n    # SHA-256 of the token in ./token\n    tokens_sha256: [\"{hash}\"]\n{every_role}  - name: raftq-admin   # the CN of client.pem\n{every_role}"
            ),
        )?;
        Ok(certs)
    }

    /// How a client connects with TLS and the token.
    pub fn options(&self) -> anyhow::Result<ConnectOptions> {
        let ca = std::fs::read(&self.ca_cert)?;
        // The bench finds the leaders itself.
        Ok(ConnectOptions::new()
            .route_to_leaders(false)
            .tls(TlsOptions::new().ca_cert_pem(ca))
            .token(self.token.clone()))
    }
}
