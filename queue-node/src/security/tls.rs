//! TLS for both ports from PEM files, re-read when they change: the client
//! port's server config, the peer port's (mutual TLS: a peer must present
//! a certificate of the cluster CA), and the config this node dials other
//! nodes with. A rotation swaps the configs; connections already open
//! keep the keys they were made with, new ones get the new keys.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ClientCerts, TlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path} holds no PEM {expected}")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{what} {path} is not valid PEM: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("TLS settings from {cert} and {key}: {source}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("CA bundle {path}: {message}")]
    Ca { path: PathBuf, message: String },
}

/// The bytes of the three files, as last loaded.
#[derive(PartialEq, Eq, Clone)]
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

struct Configs {
    client_port: Arc<ServerConfig>,
    peer_port: Arc<ServerConfig>,
    dial: Arc<ClientConfig>,
    expiry: Expiry,
}

/// When the certificates in use expire (seconds since the Unix epoch),
/// for `/metrics`; `None` for one whose date could not be read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expiry {
    /// This node's own certificate.
    pub certificate: Option<i64>,
    /// The first to expire of the CA bundle's certificates.
    pub ca: Option<i64>,
}

/// The current TLS configs, swapped whole when the files change.
pub struct TlsState {
    settings: TlsConfig,
    files: RwLock<Files>,
    configs: RwLock<Arc<Configs>>,
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn certs(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "CERTIFICATE",
        });
    }
    Ok(certs)
}

impl TlsState {
    pub fn load(settings: TlsConfig) -> Result<TlsState, TlsError> {
        let files = read_files(&settings)?;
        let configs = build(&settings, &files)?;
        Ok(TlsState {
            settings,
            files: RwLock::new(files),
            configs: RwLock::new(Arc::new(configs)),
        })
    }

    fn current(&self) -> Arc<Configs> {
        self.configs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn client_port(&self) -> Arc<ServerConfig> {
        self.current().client_port.clone()
    }

    pub fn peer_port(&self) -> Arc<ServerConfig> {
        self.current().peer_port.clone()
    }

    pub fn dial(&self) -> Arc<ClientConfig> {
        self.current().dial.clone()
    }

    /// When the certificates in use expire.
    pub fn expiry(&self) -> Expiry {
        self.current().expiry
    }

    pub fn peer_names(&self) -> &[String] {
        &self.settings.peer_names
    }

    /// Re-reads the files; swaps the configs when they changed and load.
    /// Returns whether they changed. A half-written rotation (a key that
    /// does not match its certificate yet) fails here and is retried on
    /// the next call, while the old configs keep serving.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let files = read_files(&self.settings)?;
        if *self.files.read().unwrap_or_else(|p| p.into_inner()) == files {
            return Ok(false);
        }
        let configs = build(&self.settings, &files)?;
        *self.configs.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(configs);
        *self.files.write().unwrap_or_else(|p| p.into_inner()) = files;
        Ok(true)
    }
}

fn read_files(s: &TlsConfig) -> Result<Files, TlsError> {
    Ok(Files {
        cert: read("certificate", &s.cert_file)?,
        key: read("key", &s.key_file)?,
        ca: read("CA bundle", &s.ca_file)?,
    })
}

fn build(s: &TlsConfig, files: &Files) -> Result<Configs, TlsError> {
    let chain = certs("certificate", &s.cert_file, &files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what: "key",
            path: s.key_file.clone(),
            expected: "PRIVATE KEY",
        },
        source => TlsError::Pem {
            what: "key",
            path: s.key_file.clone(),
            source,
        },
    })?;
    let cas = certs("CA bundle", &s.ca_file, &files.ca)?;
    let expiry = Expiry {
        certificate: chain.first().and_then(|c| super::validity::not_after(c)),
        ca: cas
            .iter()
            .filter_map(|c| super::validity::not_after(c))
            .min(),
    };
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca).map_err(|e| TlsError::Ca {
            path: s.ca_file.clone(),
            message: e.to_string(),
        })?;
    }
    let roots = Arc::new(roots);
    let config_error = |source| TlsError::Config {
        cert: s.cert_file.clone(),
        key: s.key_file.clone(),
        source,
    };
    let verifier = |optional: bool| {
        let builder = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
        let builder = if optional {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        builder.build().map_err(|e| TlsError::Ca {
            path: s.ca_file.clone(),
            message: e.to_string(),
        })
    };
    let server =
        |client_auth: Option<bool>, alpn: &[&[u8]]| -> Result<Arc<ServerConfig>, TlsError> {
            let builder = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(config_error)?;
            let builder = match client_auth {
                None => builder.with_no_client_auth(),
                Some(optional) => builder.with_client_cert_verifier(verifier(optional)?),
            };
            let mut config = builder
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(config_error)?;
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(config))
        };
    // The client port serves REST and the console too: browsers and curl
    // may ask for HTTP/1.1.
    let client_port = server(
        match s.client_certs {
            ClientCerts::None => None,
            ClientCerts::Optional => Some(true),
            ClientCerts::Required => Some(false),
        },
        &[b"h2", b"http/1.1"],
    )?;
    let peer_port = server(Some(false), &[b"h2"])?;
    let mut dial = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(config_error)?;
    dial.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Configs {
        client_port,
        peer_port,
        dial: Arc::new(dial),
        expiry,
    })
}
