//! Brings a JobQueue's certificates and auth Secrets to what its spec
//! asks for, and returns what the reconcile needs from them: the
//! operator's client identity for the nodes, and what to report.
//!
//! Reads and writes Secrets, ConfigMaps and cert-manager Certificates;
//! what to write is decided by the pure functions of [`secrets`].

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Client, ResourceExt};

use crate::certs::{self, Day};
use crate::crd::{JobQueue, TlsMode};
use crate::membership::ClientTls;
use crate::objects;
use crate::reconcile::MANAGER;
use crate::secrets::{self, CA_CERT, CA_KEY, TLS_CERT, TLS_KEY, TOKEN};
use crate::Error;

/// The outcome of [`ensure`].
#[derive(Debug, Default)]
pub struct Credentials {
    /// How the operator dials the nodes; `None` when TLS is off or the
    /// certificates are not there yet.
    pub client_tls: Option<Arc<ClientTls>>,
    /// The `CertificatesReady` condition; `None` when TLS is off.
    pub certificates: Option<Readiness>,
    /// What is wrong with the auth settings, if anything.
    pub auth_problem: Option<String>,
    /// Certificates issued or renewed by this reconcile, for events.
    pub issued: Vec<String>,
}

/// A condition's status, reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

impl Readiness {
    fn not_ready(reason: &str, message: String) -> Readiness {
        Readiness {
            ready: false,
            reason: reason.into(),
            message,
        }
    }
}

impl Credentials {
    /// TLS is on but the operator cannot dial the nodes yet.
    pub fn waiting(&self) -> Option<&str> {
        match &self.certificates {
            Some(r) if !r.ready => Some(&r.message),
            _ => None,
        }
    }
}

pub async fn ensure(jq: &JobQueue, client: &Client, today: Day) -> Result<Credentials, Error> {
    let ns = jq.namespace().unwrap_or_default();
    let store = Store {
        secrets: Api::namespaced(client.clone(), &ns),
        client: client.clone(),
        ns,
    };
    let mut out = Credentials::default();
    let ca_pem = match jq.spec.tls.mode {
        TlsMode::Disabled => None,
        TlsMode::OperatorManaged => operator_managed(jq, &store, today, &mut out).await?,
        TlsMode::CertManager => cert_manager(jq, &store, &mut out).await?,
        TlsMode::Secret => own_secrets(jq, &store, &mut out).await?,
    };
    if let Some(ca) = &ca_pem {
        store.apply_map(&secrets::ca_bundle(jq, ca)?).await?;
    }
    if jq.spec.auth.enabled {
        auth(jq, &store, ca_pem.as_deref(), &mut out).await?;
    }
    Ok(out)
}

struct Store {
    secrets: Api<Secret>,
    client: Client,
    ns: String,
}

impl Store {
    async fn get(&self, name: &str) -> Result<Option<Secret>, Error> {
        Ok(self.secrets.get_opt(name).await?)
    }

    async fn apply(&self, secret: &Secret) -> Result<(), Error> {
        let name = secret.name_any();
        self.secrets
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(secret),
            )
            .await?;
        Ok(())
    }

    /// Creates `secret` unless one of its name exists; returns the one
    /// stored (two operators racing keep the first).
    async fn create_once(&self, secret: &Secret) -> Result<Secret, Error> {
        match self.secrets.create(&PostParams::default(), secret).await {
            Ok(s) => Ok(s),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                Ok(self.secrets.get(&secret.name_any()).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn apply_map(&self, map: &ConfigMap) -> Result<(), Error> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.ns);
        api.patch(
            &map.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(map),
        )
        .await?;
        Ok(())
    }
}

/// The CA (made once) and the node and operator certificates (issued
/// again when due).
async fn operator_managed(
    jq: &JobQueue,
    store: &Store,
    today: Day,
    out: &mut Credentials,
) -> Result<Option<String>, Error> {
    let names = objects::names(jq);
    let ca_name = secrets::ca_common_name(jq);
    let ca_secret = match store.get(&names.ca_secret).await? {
        Some(s) => s,
        None => {
            let ca = certs::new_ca(&ca_name, today).map_err(Error::Render)?;
            let not_after = today.plus(certs::CA_DAYS).map_err(Error::Render)?;
            out.issued.push(format!(
                "created the CA (Secret {}), valid until {not_after}",
                names.ca_secret
            ));
            store
                .create_once(&secrets::ca_secret(jq, &ca, not_after)?)
                .await?
        }
    };
    let (Some(ca_pem), Some(ca_key)) = (
        secrets::text(&ca_secret, CA_CERT),
        secrets::text(&ca_secret, CA_KEY),
    ) else {
        out.certificates = Some(Readiness::not_ready(
            "CABroken",
            format!(
                "Secret {} lacks ca.crt or ca.key; delete it to have a new CA made (every \
                 certificate is issued again, and clients must trust the new CA)",
                names.ca_secret
            ),
        ));
        return Ok(None);
    };
    let mut expiry = Vec::new();
    let mut client_tls = None;
    for (secret_name, leaf) in [
        (&names.tls_secret, secrets::node_leaf(jq)),
        (&names.operator_secret, secrets::operator_leaf()),
    ] {
        let stored = store.get(secret_name).await?;
        let current = match secrets::reissue_reason(stored.as_ref(), &leaf, &ca_pem, today) {
            None => stored,
            Some(why) => {
                let issued = certs::issue(&ca_name, &ca_key, &leaf, today, certs::LEAF_DAYS)
                    .map_err(Error::Render)?;
                let not_after = today.plus(certs::LEAF_DAYS).map_err(Error::Render)?;
                let secret =
                    secrets::leaf_secret(jq, secret_name, &leaf, &issued, &ca_pem, not_after)?;
                store.apply(&secret).await?;
                out.issued.push(format!(
                    "issued the certificate in Secret {secret_name} ({why}), valid until {not_after}"
                ));
                Some(secret)
            }
        };
        let current = current.as_ref();
        expiry.push(format!(
            "{secret_name} until {}",
            current
                .and_then(|s| s.annotations().get(secrets::NOT_AFTER_ANNOTATION).cloned())
                .unwrap_or_default()
        ));
        if *secret_name == names.operator_secret {
            client_tls = current.and_then(|s| identity(s, &ca_pem));
        }
    }
    out.client_tls = client_tls.map(Arc::new);
    out.certificates = Some(Readiness {
        ready: true,
        reason: "Issued".into(),
        message: format!(
            "issued by the operator's CA ({}): {}; renewed {} days before expiry",
            names.ca_secret,
            expiry.join(", "),
            certs::RENEW_DAYS_BEFORE
        ),
    });
    Ok(Some(ca_pem))
}

fn identity(secret: &Secret, ca_pem: &str) -> Option<ClientTls> {
    Some(ClientTls {
        ca_pem: ca_pem.to_string(),
        cert_pem: secrets::text(secret, TLS_CERT)?,
        key_pem: secrets::text(secret, TLS_KEY)?,
    })
}

/// cert-manager's `Certificate` objects, then the Secrets it fills.
async fn cert_manager(
    jq: &JobQueue,
    store: &Store,
    out: &mut Credentials,
) -> Result<Option<String>, Error> {
    let names = objects::names(jq);
    let resource = ApiResource {
        group: "cert-manager.io".into(),
        version: "v1".into(),
        api_version: "cert-manager.io/v1".into(),
        kind: "Certificate".into(),
        plural: "certificates".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(store.client.clone(), &store.ns, &resource);
    for (secret_name, leaf) in [
        (&names.tls_secret, secrets::node_leaf(jq)),
        (&names.operator_secret, secrets::operator_leaf()),
    ] {
        let certificate = secrets::certificate(jq, secret_name, &leaf)?;
        match api
            .patch(
                secret_name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&certificate),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {
                out.certificates = Some(Readiness::not_ready(
                    "CertManagerMissing",
                    "tls.mode is certManager but this cluster has no cert-manager Certificate \
                     kind (certificates.cert-manager.io); install cert-manager or pick another \
                     tls.mode"
                        .into(),
                ));
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let node = store.get(&names.tls_secret).await?;
    let operator = store.get(&names.operator_secret).await?;
    let ca_pem = node.as_ref().and_then(|s| secrets::text(s, CA_CERT));
    let client = match (&ca_pem, &operator) {
        (Some(ca), Some(op)) => identity(op, ca),
        _ => None,
    };
    let node_ready = node.as_ref().is_some_and(|s| {
        secrets::text(s, TLS_CERT).is_some() && secrets::text(s, TLS_KEY).is_some()
    });
    if !node_ready || client.is_none() || ca_pem.is_none() {
        out.certificates = Some(Readiness::not_ready(
            "WaitingForIssuer",
            format!(
                "waiting for cert-manager to fill Secrets {} and {} (tls.crt, tls.key and \
                 ca.crt) from {}",
                names.tls_secret,
                names.operator_secret,
                jq.spec
                    .tls
                    .issuer_ref
                    .as_ref()
                    .map_or_else(String::new, |i| format!("{} {}", i.kind, i.name))
            ),
        ));
        return Ok(None);
    }
    out.client_tls = client.map(Arc::new);
    out.certificates = Some(Readiness {
        ready: true,
        reason: "Issued".into(),
        message: format!(
            "issued by cert-manager into Secrets {} and {}; cert-manager renews them",
            names.tls_secret, names.operator_secret
        ),
    });
    Ok(ca_pem)
}

/// The user's own Secrets, as `tls.secretName` and friends name them.
async fn own_secrets(
    jq: &JobQueue,
    store: &Store,
    out: &mut Credentials,
) -> Result<Option<String>, Error> {
    let tls = &jq.spec.tls;
    let node_name = tls.secret_name.clone().unwrap_or_default();
    let operator_name = tls.operator_secret_name.clone().unwrap_or_default();
    let node = store.get(&node_name).await?;
    let operator = store.get(&operator_name).await?;
    let (ca_pem, ca_from) = match &tls.ca_secret_name {
        Some(ca) => (
            store
                .get(ca)
                .await?
                .and_then(|s| secrets::text(&s, CA_CERT)),
            ca.clone(),
        ),
        None => (
            node.as_ref().and_then(|s| secrets::text(s, CA_CERT)),
            node_name.clone(),
        ),
    };
    let mut missing = Vec::new();
    let has =
        |s: &Option<Secret>, key: &str| s.as_ref().and_then(|s| secrets::text(s, key)).is_some();
    for (secret, name, keys) in [
        (&node, &node_name, [TLS_CERT, TLS_KEY]),
        (&operator, &operator_name, [TLS_CERT, TLS_KEY]),
    ] {
        for key in keys {
            if !has(secret, key) {
                missing.push(format!("{name}/{key}"));
            }
        }
    }
    if ca_pem.is_none() {
        missing.push(format!("{ca_from}/{CA_CERT}"));
    }
    if !missing.is_empty() {
        out.certificates = Some(Readiness::not_ready(
            "SecretMissing",
            format!(
                "tls.mode is secret, and these Secret keys are missing: {}",
                missing.join(", ")
            ),
        ));
        return Ok(None);
    }
    out.client_tls = match (&ca_pem, &operator) {
        (Some(ca), Some(op)) => identity(op, ca).map(Arc::new),
        _ => None,
    };
    out.certificates = Some(Readiness {
        ready: true,
        reason: "Provided".into(),
        message: format!(
            "from Secrets {node_name} (nodes), {operator_name} (operator) and {ca_from} (CA); \
             renewing them is up to their owner"
        ),
    });
    Ok(ca_pem)
}

/// The starter admin token (made once), the operator's principals file,
/// and a check of the user's.
async fn auth(
    jq: &JobQueue,
    store: &Store,
    ca_pem: Option<&str>,
    out: &mut Credentials,
) -> Result<(), Error> {
    let names = objects::names(jq);
    let admin = match store.get(&names.admin_secret).await? {
        Some(s) if secrets::text(&s, TOKEN).is_some() => s,
        stored => {
            let token = certs::random_token().map_err(Error::Render)?;
            let fresh = secrets::admin_secret(jq, &token, ca_pem)?;
            if stored.is_some() {
                // Emptied by hand: a new token.
                store.apply(&fresh).await?;
                fresh
            } else {
                store.create_once(&fresh).await?
            }
        }
    };
    let token = secrets::text(&admin, TOKEN).unwrap_or_default();
    if secrets::text(&admin, CA_CERT).as_deref() != ca_pem {
        store
            .apply(&secrets::admin_secret(jq, &token, ca_pem)?)
            .await?;
    }
    store.apply(&secrets::auth_secret(jq, &token)?).await?;
    if let Some(users) = &jq.spec.auth.secret_ref {
        let stored = store.get(&users.name).await?;
        out.auth_problem = secrets::check_user_principals(&users.name, stored.as_ref()).err();
    }
    Ok(())
}
