//! The Secrets, ConfigMap and cert-manager `Certificate`s that TLS and
//! auth need, built by pure functions of the JobQueue and what is stored
//! already; and the decision whether a certificate must be issued again.
//! No API calls here: `credentials` reads and writes them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::ResourceExt;

use crate::certs::{self, Day, Issued, Leaf};
use crate::crd::JobQueue;
use crate::objects::{self, OPERATOR_PRINCIPALS_KEY, USER_PRINCIPALS_KEY};
use crate::Error;

/// The principal the operator authenticates as (its certificate's CN).
pub const OPERATOR_PRINCIPAL: &str = "raftq-operator";
/// The starter principal whose token is in Secret `<name>-admin`.
pub const ADMIN_PRINCIPAL: &str = "admin";
/// On a Secret holding a certificate the operator issued: its last day
/// of validity and the names it is valid for.
pub const NOT_AFTER_ANNOTATION: &str = "raftq.dev/not-after";
pub const NAMES_ANNOTATION: &str = "raftq.dev/names";

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const TOKEN: &str = "token";

/// The CA's common name. Deterministic: every later signature is made
/// with it, and must match the CA certificate's subject.
pub fn ca_common_name(jq: &JobQueue) -> String {
    format!(
        "raftq {}/{} CA",
        jq.namespace().unwrap_or_else(|| "default".into()),
        jq.name_any()
    )
}

pub fn node_leaf(jq: &JobQueue) -> Leaf {
    Leaf {
        common_name: objects::names(jq).stateful_set,
        names: objects::node_cert_names(jq),
        server: true,
    }
}

pub fn operator_leaf() -> Leaf {
    Leaf {
        common_name: OPERATOR_PRINCIPAL.into(),
        names: Vec::new(),
        server: false,
    }
}

/// A key's text in a Secret, if present and UTF-8.
pub fn text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|t| !t.is_empty())
}

fn secret(
    jq: &JobQueue,
    name: &str,
    data: &[(&str, &str)],
    annotations: BTreeMap<String, String>,
) -> Result<Secret, Error> {
    let mut meta = objects::metadata(jq, name)?;
    if !annotations.is_empty() {
        meta.annotations = Some(annotations);
    }
    Ok(Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    })
}

/// Secret `<name>-ca`: the CA certificate and its key.
pub fn ca_secret(jq: &JobQueue, ca: &Issued, not_after: Day) -> Result<Secret, Error> {
    secret(
        jq,
        &objects::names(jq).ca_secret,
        &[(CA_CERT, &ca.cert_pem), (CA_KEY, &ca.key_pem)],
        BTreeMap::from([(NOT_AFTER_ANNOTATION.to_string(), not_after.to_string())]),
    )
}

/// A certificate the operator issued, in the layout cert-manager uses
/// (`tls.crt`, `tls.key`, `ca.crt`), with what it was issued for.
pub fn leaf_secret(
    jq: &JobQueue,
    name: &str,
    leaf: &Leaf,
    issued: &Issued,
    ca_pem: &str,
    not_after: Day,
) -> Result<Secret, Error> {
    secret(
        jq,
        name,
        &[
            (TLS_CERT, &issued.cert_pem),
            (TLS_KEY, &issued.key_pem),
            (CA_CERT, ca_pem),
        ],
        BTreeMap::from([
            (NOT_AFTER_ANNOTATION.to_string(), not_after.to_string()),
            (NAMES_ANNOTATION.to_string(), names_label(leaf)),
        ]),
    )
}

fn names_label(leaf: &Leaf) -> String {
    std::iter::once(format!("CN={}", leaf.common_name))
        .chain(leaf.names.iter().cloned())
        .collect::<Vec<_>>()
        .join(",")
}

/// Why the certificate in `stored` must be issued again for `leaf` by
/// the CA `ca_pem` on `today`; `None` while it is good.
pub fn reissue_reason(
    stored: Option<&Secret>,
    leaf: &Leaf,
    ca_pem: &str,
    today: Day,
) -> Option<String> {
    let Some(stored) = stored else {
        return Some("none issued yet".into());
    };
    if text(stored, TLS_CERT).is_none() || text(stored, TLS_KEY).is_none() {
        return Some("the Secret lacks tls.crt or tls.key".into());
    }
    if text(stored, CA_CERT).as_deref() != Some(ca_pem) {
        return Some("it was signed by another CA".into());
    }
    let annotations = stored.annotations();
    if annotations.get(NAMES_ANNOTATION) != Some(&names_label(leaf)) {
        return Some("the names it must be valid for changed".into());
    }
    let Some(not_after) = annotations
        .get(NOT_AFTER_ANNOTATION)
        .and_then(|d| Day::parse(d))
    else {
        return Some("its expiry is not recorded".into());
    };
    let renew_from = not_after.plus(-certs::RENEW_DAYS_BEFORE).ok()?;
    (today >= renew_from).then(|| format!("it expires on {not_after}"))
}

/// The starter admin's Secret: its token, and the CA to connect with.
pub fn admin_secret(jq: &JobQueue, token: &str, ca_pem: Option<&str>) -> Result<Secret, Error> {
    let mut data = vec![(TOKEN, token)];
    if let Some(ca) = ca_pem {
        data.push((CA_CERT, ca));
    }
    secret(jq, &objects::names(jq).admin_secret, &data, BTreeMap::new())
}

/// The operator's principals file: itself (by certificate) with
/// `cluster-admin`, and the starter admin (by token) with every role.
pub fn operator_principals(admin_token: &str) -> String {
    let every_queue = ["produce", "consume", "read", "queue-admin"]
        .iter()
        .map(|role| format!("      - {{ role: {role}, queues: [\"*\"] }}\n"))
        .collect::<String>();
    format!(
        "# Written by the raftq operator; add your own principals in the Secret\n\
         # named by spec.auth.secretRef (key {USER_PRINCIPALS_KEY}).\n\
         principals:\n\
         \x20 - name: {OPERATOR_PRINCIPAL}\n\
         \x20   grants:\n\
         \x20     - {{ role: cluster-admin }}\n\
         \x20 - name: {ADMIN_PRINCIPAL}\n\
         \x20   tokens_sha256: [\"{}\"]\n\
         \x20   grants:\n{every_queue}\
         \x20     - {{ role: cluster-admin }}\n",
        certs::token_sha256(admin_token)
    )
}

pub fn auth_secret(jq: &JobQueue, admin_token: &str) -> Result<Secret, Error> {
    let principals = operator_principals(admin_token);
    secret(
        jq,
        &objects::names(jq).auth_secret,
        &[(OPERATOR_PRINCIPALS_KEY, &principals)],
        BTreeMap::new(),
    )
}

/// What is wrong with a user's principals Secret, if anything the
/// operator can tell without the nodes: the key is missing, it is not a
/// principals list, or it uses a name the operator reserves.
pub fn check_user_principals(secret_name: &str, stored: Option<&Secret>) -> Result<(), String> {
    let Some(stored) = stored else {
        return Err(format!(
            "spec.auth.secretRef names Secret {secret_name}, which does not exist"
        ));
    };
    let Some(yaml) = text(stored, USER_PRINCIPALS_KEY) else {
        return Err(format!(
            "Secret {secret_name} has no key {USER_PRINCIPALS_KEY} (the principals file)"
        ));
    };
    #[derive(serde::Deserialize)]
    struct File {
        principals: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        name: String,
    }
    let file: File = serde_yaml::from_str(&yaml).map_err(|e| {
        format!("Secret {secret_name}, {USER_PRINCIPALS_KEY}: not a principals file: {e}")
    })?;
    for p in &file.principals {
        if p.name == OPERATOR_PRINCIPAL || p.name == ADMIN_PRINCIPAL {
            return Err(format!(
                "Secret {secret_name}, {USER_PRINCIPALS_KEY}: the principal name {} is reserved \
                 for the operator's own principals; rename it",
                p.name
            ));
        }
    }
    Ok(())
}

/// ConfigMap `<name>-ca-bundle`: the CA certificate, public, for
/// clients to mount.
pub fn ca_bundle(jq: &JobQueue, ca_pem: &str) -> Result<ConfigMap, Error> {
    Ok(ConfigMap {
        metadata: objects::metadata(jq, &objects::names(jq).ca_bundle)?,
        data: Some(BTreeMap::from([(CA_CERT.to_string(), ca_pem.to_string())])),
        ..ConfigMap::default()
    })
}

/// A cert-manager `Certificate` (cert-manager.io/v1) for `leaf`, issued
/// into Secret `secret_name` by `spec.tls.issuerRef`.
pub fn certificate(
    jq: &JobQueue,
    secret_name: &str,
    leaf: &Leaf,
) -> Result<serde_json::Value, Error> {
    let issuer = jq.spec.tls.issuer_ref.as_ref().ok_or_else(|| {
        Error::InvalidResource("tls.mode: certManager needs tls.issuerRef".into())
    })?;
    let (ips, dns): (Vec<&String>, Vec<&String>) = leaf
        .names
        .iter()
        .partition(|n| n.parse::<std::net::IpAddr>().is_ok());
    let mut usages = vec!["digital signature", "key encipherment", "client auth"];
    if leaf.server {
        usages.push("server auth");
    }
    let meta = objects::metadata(jq, secret_name)?;
    Ok(serde_json::json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": meta,
        "spec": {
            "secretName": secret_name,
            "commonName": leaf.common_name,
            "dnsNames": dns,
            "ipAddresses": ips,
            "duration": format!("{}h", certs::LEAF_DAYS * 24),
            "renewBefore": format!("{}h", certs::RENEW_DAYS_BEFORE * 24),
            "usages": usages,
            "privateKey": { "algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always" },
            "issuerRef": { "name": issuer.name, "kind": issuer.kind, "group": issuer.group },
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::JobQueueSpec;

    fn queue(spec: serde_json::Value) -> JobQueue {
        let spec: JobQueueSpec = serde_json::from_value(spec).expect("spec");
        let mut jq = JobQueue::new("orders", spec);
        jq.metadata.namespace = Some("shop".into());
        jq.metadata.uid = Some("uid-1".into());
        jq
    }

    fn day(s: &str) -> Day {
        Day::parse(s).expect("a date")
    }

    #[test]
    fn a_certificate_is_reissued_for_expiry_names_or_ca_and_not_otherwise() {
        let jq = queue(serde_json::json!({}));
        let ca = certs::new_ca(&ca_common_name(&jq), day("2026-01-01")).unwrap();
        let leaf = node_leaf(&jq);
        assert_eq!(
            reissue_reason(None, &leaf, &ca.cert_pem, day("2026-01-01")).as_deref(),
            Some("none issued yet")
        );
        let issued = certs::issue(
            &ca_common_name(&jq),
            &ca.key_pem,
            &leaf,
            day("2026-01-01"),
            90,
        )
        .unwrap();
        let stored = leaf_secret(
            &jq,
            "orders-tls",
            &leaf,
            &issued,
            &ca.cert_pem,
            day("2026-04-01"),
        )
        .unwrap();
        let due = |today: &str| reissue_reason(Some(&stored), &leaf, &ca.cert_pem, day(today));
        assert_eq!(due("2026-01-02"), None);
        assert_eq!(due("2026-03-01"), None, "31 days left");
        assert_eq!(
            due("2026-03-02").as_deref(),
            Some("it expires on 2026-04-01"),
            "30 days left: renewed"
        );
        let other_ca = certs::new_ca("another", day("2026-01-01")).unwrap();
        assert_eq!(
            reissue_reason(Some(&stored), &leaf, &other_ca.cert_pem, day("2026-01-02")).as_deref(),
            Some("it was signed by another CA")
        );
        let mut renamed = jq.clone();
        renamed.metadata.namespace = Some("billing".into());
        assert_eq!(
            reissue_reason(
                Some(&stored),
                &node_leaf(&renamed),
                &ca.cert_pem,
                day("2026-01-02")
            )
            .as_deref(),
            Some("the names it must be valid for changed")
        );
    }

    #[test]
    fn node_certificates_name_every_pod_the_service_and_loopback() {
        let leaf = node_leaf(&queue(serde_json::json!({})));
        for name in [
            "*.orders-peers.shop.svc",
            "*.orders-peers.shop.svc.cluster.local",
            "orders.shop.svc",
            "localhost",
            "127.0.0.1",
        ] {
            assert!(leaf.names.contains(&name.to_string()), "{name}");
        }
        assert!(leaf.server);
        assert!(!operator_leaf().server, "the operator only dials");
    }

    #[test]
    fn the_operators_principals_give_it_cluster_admin_and_the_admin_every_role() {
        let text = operator_principals("t0ken");
        let file: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let principals = file["principals"].as_array().unwrap();
        assert_eq!(principals[0]["name"], OPERATOR_PRINCIPAL);
        assert_eq!(principals[0]["grants"][0]["role"], "cluster-admin");
        assert!(
            principals[0].get("tokens_sha256").is_none(),
            "by certificate only"
        );
        assert_eq!(principals[1]["name"], ADMIN_PRINCIPAL);
        assert_eq!(
            principals[1]["tokens_sha256"][0],
            certs::token_sha256("t0ken")
        );
        let roles: Vec<&str> = principals[1]["grants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            ["produce", "consume", "read", "queue-admin", "cluster-admin"]
        );
        assert!(!text.contains("t0ken"), "never the token itself");
    }

    #[test]
    fn a_users_principals_secret_is_checked_before_the_nodes_see_it() {
        let jq = queue(serde_json::json!({}));
        let with = |yaml: &str| {
            secret(
                &jq,
                "users",
                &[(USER_PRINCIPALS_KEY, yaml)],
                BTreeMap::new(),
            )
            .unwrap()
        };
        assert!(check_user_principals("users", None)
            .unwrap_err()
            .contains("does not exist"));
        let wrong_key = secret(&jq, "users", &[("other", "x")], BTreeMap::new()).unwrap();
        assert!(check_user_principals("users", Some(&wrong_key))
            .unwrap_err()
            .contains("no key principals.yaml"));
        assert!(check_user_principals("users", Some(&with("principals: 3")))
            .unwrap_err()
            .contains("not a principals file"));
        assert!(
            check_user_principals("users", Some(&with("principals:\n- name: admin\n")))
                .unwrap_err()
                .contains("reserved")
        );
        assert_eq!(
            check_user_principals("users", Some(&with("principals:\n- name: billing\n"))),
            Ok(())
        );
    }

    #[test]
    fn cert_manager_certificates_use_the_issuer_and_the_node_names() {
        let jq = queue(serde_json::json!({"tls": {
            "mode": "certManager",
            "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"},
        }}));
        let cert = certificate(&jq, "orders-tls", &node_leaf(&jq)).unwrap();
        assert_eq!(cert["kind"], "Certificate");
        assert_eq!(cert["metadata"]["ownerReferences"][0]["name"], "orders");
        assert_eq!(cert["spec"]["secretName"], "orders-tls");
        assert_eq!(cert["spec"]["issuerRef"]["kind"], "ClusterIssuer");
        assert_eq!(cert["spec"]["issuerRef"]["group"], "cert-manager.io");
        assert_eq!(
            cert["spec"]["ipAddresses"],
            serde_json::json!(["127.0.0.1"])
        );
        assert!(cert["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("*.orders-peers.shop.svc")));
        assert!(cert["spec"]["usages"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("server auth")));
        let op = certificate(&jq, "orders-operator", &operator_leaf()).unwrap();
        assert_eq!(op["spec"]["commonName"], OPERATOR_PRINCIPAL);
        assert!(!op["spec"]["usages"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("server auth")));
    }
}
