//! The REST/JSON API on a real node's client port, spoken as `curl` would:
//! plain HTTP/1.1 over TCP (and over TLS), JSON bodies, bearer tokens.
//! Checks a job's whole life, errors that name the field and store
//! nothing, the same roles as gRPC, and that the OpenAPI document and the
//! routes agree.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::certs::{token_hash, Ca, NodeFiles};
use common::wait_for;
use raftq_client::proto as pb;
use raftq_node::config::AuthConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// One HTTP/1.1 exchange on a fresh connection.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: raftq\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let rest = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunk(rest)
    } else {
        rest.to_string()
    };
    let value = serde_json::from_str(&rest).unwrap_or(Value::String(rest));
    (status, value)
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

struct Api {
    addr: String,
    token: Option<String>,
}

impl Api {
    fn new(addr: &str) -> Api {
        Api {
            addr: addr.to_string(),
            token: None,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let stream = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        let body = body.map(|b| b.to_string());
        exchange(stream, method, path, self.token.as_deref(), body.as_deref()).await
    }

    async fn raw(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let stream = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        exchange(stream, method, path, self.token.as_deref(), Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    /// The answer, which must be `status`.
    async fn expect(&self, status: u16, method: &str, path: &str, body: Option<Value>) -> Value {
        let (got, value) = self.call(method, path, body).await;
        assert_eq!(got, status, "{method} {path}: {value}");
        value
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_goes_through_its_whole_life_over_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::fast_config(dir.path());
    config.console.sample_every_ms = 200;
    let (node, client) = common::start_with(config).await;
    let api = Api::new(&node.addr.to_string());

    let enqueued = api
        .expect(
            201,
            "POST",
            "/api/v1/queues/emails/jobs",
            Some(json!({"jobs": [
                {"payload": "hello", "headers": {"tenant": "acme"}},
                {"payload_base64": "AAEC", "priority": 5},
                {"payload": "later", "delay_ms": 3_600_000},
                {"payload": "once", "idempotency_key": "order-1"},
            ]})),
        )
        .await;
    let job_ids: Vec<String> = serde_json::from_value(enqueued["job_ids"].clone()).unwrap();
    assert_eq!(enqueued["duplicate"], json!([false, false, false, false]));
    // gRPC sees what REST stored, bytes intact.
    let binary = client
        .admin()
        .get_job(pb::JobRef {
            job_id: job_ids[1].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&binary.payload[..], &[0, 1, 2]);
    // An idempotency key repeated: the same job.
    let again = api
        .expect(
            201,
            "POST",
            "/api/v1/queues/emails/jobs",
            Some(json!({"jobs": [{"payload": "once", "idempotency_key": "order-1"}]})),
        )
        .await;
    assert_eq!(again["job_ids"][0], job_ids[3]);
    assert_eq!(again["duplicate"], json!([true]));

    // Listings: newest first, by state, header, idempotency key.
    let all = api
        .expect(200, "GET", "/api/v1/queues/emails/jobs", None)
        .await;
    let mut newest_first = job_ids.clone();
    newest_first.reverse();
    assert_eq!(ids(&all), newest_first);
    assert!(
        all["jobs"][0].get("payload").is_none(),
        "no payloads unless asked"
    );
    let scheduled = api
        .expect(
            200,
            "GET",
            "/api/v1/queues/emails/jobs?state=scheduled",
            None,
        )
        .await;
    assert_eq!(ids(&scheduled), vec![job_ids[2].clone()]);
    let tenant = api
        .expect(
            200,
            "GET",
            "/api/v1/queues/emails/jobs?header=tenant=acme&payload=true",
            None,
        )
        .await;
    assert_eq!(ids(&tenant), vec![job_ids[0].clone()]);
    assert_eq!(tenant["jobs"][0]["payload"], "hello");
    assert_eq!(tenant["jobs"][0]["headers"]["tenant"], "acme");
    let keyed = api
        .expect(
            200,
            "GET",
            "/api/v1/queues/emails/jobs?idempotency_key=order-1",
            None,
        )
        .await;
    assert_eq!(ids(&keyed), vec![job_ids[3].clone()]);
    let paged = api
        .expect(200, "GET", "/api/v1/queues/emails/jobs?limit=3", None)
        .await;
    assert_eq!(ids(&paged).len(), 3);
    let next = paged["next"].as_str().unwrap();
    let rest = api
        .expect(
            200,
            "GET",
            &format!("/api/v1/queues/emails/jobs?limit=3&before={next}"),
            None,
        )
        .await;
    assert_eq!(ids(&rest), vec![job_ids[0].clone()]);

    // Fetch the priority job, extend, nack with an error.
    let leased = api
        .expect(
            200,
            "POST",
            "/api/v1/queues/emails/fetch",
            Some(json!({"worker_id": "curl", "max_jobs": 1, "wait_ms": 1000})),
        )
        .await;
    let token = leased["jobs"][0]["token"].clone();
    assert_eq!(token["job_id"], job_ids[1]);
    assert_eq!(leased["jobs"][0]["job"]["payload_base64"], "AAEC");
    assert_eq!(leased["jobs"][0]["job"]["state"], "leased");
    let extended = api
        .expect(
            200,
            "POST",
            "/api/v1/extend",
            Some(json!({"tokens": [token], "lease_ms": 60_000})),
        )
        .await;
    assert_eq!(extended["results"][0]["code"], "OK");
    assert!(
        extended["results"][0]["lease_expires_at_ms"]
            .as_i64()
            .unwrap()
            > 0
    );
    api.expect(
        200,
        "POST",
        "/api/v1/nack",
        Some(json!({"items": [{"token": token, "error": "SMTP 451 try later", "dead": true}]})),
    )
    .await;
    let failed = api
        .expect(
            200,
            "GET",
            "/api/v1/queues/emails/jobs?error=smtp%20451",
            None,
        )
        .await;
    assert_eq!(ids(&failed), vec![job_ids[1].clone()]);
    assert_eq!(failed["jobs"][0]["state"], "dead");
    assert_eq!(failed["jobs"][0]["last_error"], "SMTP 451 try later");
    // The token is spent: acking it again is a conflict, said as gRPC says it.
    let stale = api
        .expect(409, "POST", "/api/v1/ack", Some(json!({"tokens": [token]})))
        .await;
    assert!(
        ["FAILED_PRECONDITION", "NOT_FOUND"].contains(&stale["error"]["code"].as_str().unwrap()),
        "{stale}"
    );

    // Dead letters: list, requeue, lease and ack.
    let dead = api
        .expect(200, "GET", "/api/v1/queues/emails/dead", None)
        .await;
    assert_eq!(ids(&dead), vec![job_ids[1].clone()]);
    let requeued = api
        .expect(
            200,
            "POST",
            "/api/v1/queues/emails/dead/requeue",
            Some(json!({"job_ids": [job_ids[1]]})),
        )
        .await;
    assert_eq!(requeued["count"], 1);
    let leased = api
        .expect(
            200,
            "POST",
            "/api/v1/queues/emails/fetch",
            Some(json!({"max_jobs": 1})),
        )
        .await;
    let token = leased["jobs"][0]["token"].clone();
    assert_eq!(token["job_id"], job_ids[1]);
    let acked = api
        .expect(200, "POST", "/api/v1/ack", Some(json!({"tokens": [token]})))
        .await;
    assert_eq!(acked["results"][0]["code"], "OK");
    api.expect(404, "GET", &format!("/api/v1/jobs/{}", job_ids[1]), None)
        .await;

    // Cancel one job; pause, change settings, resume, purge.
    let cancelled = api
        .expect(200, "DELETE", &format!("/api/v1/jobs/{}", job_ids[2]), None)
        .await;
    assert_eq!(cancelled["job"]["payload"], "later");
    let paused = api
        .expect(200, "POST", "/api/v1/queues/emails/pause", None)
        .await;
    assert_eq!(paused["paused"], true);
    let nothing = api
        .expect(
            200,
            "POST",
            "/api/v1/queues/emails/fetch",
            Some(json!({"max_jobs": 5})),
        )
        .await;
    assert_eq!(nothing["jobs"], json!([]), "a paused queue leases nothing");
    let changed = api
        .expect(
            200,
            "PATCH",
            "/api/v1/queues/emails",
            Some(json!({"default_lease_ms": 45_000, "default_max_attempts": 4})),
        )
        .await;
    assert_eq!(changed["config"]["default_lease_ms"], 45_000);
    let info = api.expect(200, "GET", "/api/v1/queues/emails", None).await;
    assert_eq!(info["info"]["config"]["default_max_attempts"], 4);
    assert_eq!(info["info"]["paused"], true);
    assert_eq!(info["stats"]["ready"], 2);
    assert_eq!(info["stats"]["dead_total"], 1);
    api.expect(200, "POST", "/api/v1/queues/emails/resume", None)
        .await;
    let purged = api
        .expect(200, "POST", "/api/v1/queues/emails/purge", None)
        .await;
    assert_eq!(purged["removed"], 2);
    let stats = api.expect(200, "GET", "/api/v1/queues", None).await;
    let emails = stats["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "emails")
        .unwrap();
    assert_eq!(
        (emails["ready"].as_u64(), emails["dead"].as_u64()),
        (Some(0), Some(0))
    );

    // The cluster as the console shows it, and the rate history.
    let cluster = api.expect(200, "GET", "/api/v1/cluster", None).await;
    let shard = &cluster["nodes"][0]["shards"][0];
    assert_eq!(shard["role"], "leader");
    assert!(shard["members"][0]["matched_index"].as_u64().unwrap() > 0);
    let history = wait_for("two history samples", Duration::from_secs(20), || {
        let api = &api;
        async move {
            let h = api
                .expect(200, "GET", "/api/v1/history?queue=emails", None)
                .await;
            (h["queues"]["emails"].as_array()?.len() >= 2).then_some(h)
        }
    })
    .await;
    assert_eq!(history["interval_ms"], 200);
    let whoami = api.expect(200, "GET", "/api/v1/whoami", None).await;
    assert_eq!(whoami["everything"], true);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_field_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _client) = common::start_single(dir.path()).await;
    let api = Api::new(&node.addr.to_string());
    api.expect(
        201,
        "POST",
        "/api/v1/queues/q/jobs",
        Some(json!({"jobs": [{"payload": "kept"}]})),
    )
    .await;

    let cases: Vec<(&str, &str, &str, u16, &str)> = vec![
        (
            "POST",
            "/api/v1/queues/q/jobs",
            r#"{"jobs": [{"payload": "x", "priority": "high"}]}"#,
            400,
            "jobs[0].priority",
        ),
        (
            "POST",
            "/api/v1/queues/q/jobs",
            r#"{"jobs": [{"payload": "x"}, {"payload": "y", "delay_ms": -5}]}"#,
            400,
            "jobs[1].delay_ms",
        ),
        (
            "POST",
            "/api/v1/queues/q/jobs",
            r#"{"jobs": [{"payload": "x", "priorty": 1}]}"#,
            400,
            "jobs[0].priorty",
        ),
        (
            "POST",
            "/api/v1/queues/q/jobs",
            r#"{"jobs": [{"payload": "x", "payload_base64": "eA=="}]}"#,
            400,
            "jobs[0]",
        ),
        (
            "POST",
            "/api/v1/queues/q/jobs",
            r#"{"jobs": [{"payload_base64": "%%%"}]}"#,
            400,
            "jobs[0].payload_base64",
        ),
        (
            "POST",
            "/api/v1/queues/q/jobs",
            r#"{"jobs": [ {"payload": "#,
            400,
            "jobs[0].payload",
        ),
        (
            "POST",
            "/api/v1/queues/bad%20name/jobs",
            r#"{"jobs": [{"payload": "x"}]}"#,
            400,
            "queue",
        ),
        ("GET", "/api/v1/queues/q/jobs?limit=5000", "", 400, "limit"),
        (
            "GET",
            "/api/v1/queues/q/jobs?state=sleeping",
            "",
            400,
            "state",
        ),
        ("GET", "/api/v1/queues/q/jobs?colour=red", "", 400, "colour"),
        (
            "GET",
            "/api/v1/queues/q/jobs?max_scan=2000000",
            "",
            400,
            "max_scan",
        ),
        (
            "GET",
            "/api/v1/queues/q/jobs?header==acme",
            "",
            400,
            "header",
        ),
        (
            "GET",
            "/api/v1/queues/q/jobs?job_id=0-1-0&before=0-1-0",
            "",
            400,
            "before",
        ),
        (
            "POST",
            "/api/v1/queues/q/fetch",
            r#"{"max_jobs": 0}"#,
            400,
            "max_jobs",
        ),
        (
            "PATCH",
            "/api/v1/queues/q",
            r#"{"default_lease_ms": 0}"#,
            400,
            "default_lease_ms",
        ),
        (
            "POST",
            "/api/v1/ack",
            r#"{"tokens": [{"job_id": "nope", "attempt": 1}]}"#,
            400,
            "tokens[0].job_id",
        ),
    ];
    for (method, path, body, status, field) in cases {
        let (got, answer) = api.raw(method, path, body).await;
        assert_eq!(got, status, "{method} {path} {body}: {answer}");
        assert_eq!(answer["error"]["code"], "INVALID_ARGUMENT", "{answer}");
        assert_eq!(
            answer["error"]["field"], field,
            "{method} {path} {body}: {answer}"
        );
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    let (status, answer) = api.get("/api/v1/jobs/0-999-0").await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    let (status, answer) = api.get("/api/v1/no/such/route").await;
    assert_eq!(status, 404, "{answer}");
    // Nothing stored but the first job.
    let all = api
        .expect(200, "GET", "/api/v1/queues/q/jobs?payload=true", None)
        .await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(all["jobs"][0]["payload"], "kept");
    node.shutdown().await.unwrap();
}

const AUTH: &str = "principals:
  - name: viewer
    tokens_sha256: ['{viewer}']
    grants: [{ role: read, queues: ['emails'] }]
  - name: operator
    tokens_sha256: ['{operator}']
    grants: [{ role: queue-admin, queues: ['*'] }, { role: read, queues: ['*'] }, { role: produce, queues: ['*'] }]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_asks_for_the_same_roles_as_grpc_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let files = NodeFiles::write(
        &dir.path().join("tls"),
        &ca,
        &ca.leaf(&["127.0.0.1"], "node"),
    );
    let auth = dir.path().join("auth.yaml");
    std::fs::write(
        &auth,
        AUTH.replace("{viewer}", &token_hash("viewer-secret"))
            .replace("{operator}", &token_hash("operator-secret")),
    )
    .unwrap();
    let mut config = common::fast_config(&dir.path().join("data"));
    config.tls = Some(files.tls_config());
    config.auth = Some(AuthConfig { files: vec![auth] });
    config.http_listen = Some("127.0.0.1:0".into());
    let node = raftq_node::node::start(config).await.unwrap();
    let addr = node.addr.to_string();
    // The certificates' expiry, for the alert that fires before it.
    let http = node.http_addr.expect("metrics port");
    let tcp = tokio::net::TcpStream::connect(http).await.unwrap();
    let (_, metrics) = exchange(tcp, "GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    let expiry: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("raftq_tls_certificate_expiry_timestamp_seconds{certificate=\"node\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no certificate expiry in {metrics}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // The test CA's leaves (rcgen's default) run to 4096-01-01.
    assert_eq!(expiry, 67_090_118_400.0, "{expiry}");
    assert!(expiry > now);

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let https =
        |method: &'static str, path: String, token: Option<&'static str>, body: Option<Value>| {
            let (tls, addr) = (tls.clone(), addr.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
                let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let stream = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, tcp)
                    .await
                    .unwrap();
                let body = body.map(|b| b.to_string());
                exchange(stream, method, &path, token, body.as_deref()).await
            }
        };
    let operator = Some("operator-secret");
    let viewer = Some("viewer-secret");
    // The operator's token, once the node leads.
    wait_for("the node to take jobs", Duration::from_secs(30), || {
        let https = &https;
        async move {
            let (status, _) = https(
                "POST",
                "/api/v1/queues/emails/jobs".into(),
                operator,
                Some(json!({"jobs": [{"payload": "a"}]})),
            )
            .await;
            (status == 201).then_some(())
        }
    })
    .await;
    https(
        "POST",
        "/api/v1/queues/other/jobs".into(),
        operator,
        Some(json!({"jobs": [{"payload": "b"}]})),
    )
    .await;

    let (status, answer) = https("GET", "/api/v1/queues".into(), None, None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("UNAUTHENTICATED")),
        "{answer}"
    );
    let (status, _) = https("GET", "/api/v1/queues".into(), Some("wrong"), None).await;
    assert_eq!(status, 401);

    // The viewer reads its queue only, and may not act.
    let (status, stats) = https("GET", "/api/v1/queues".into(), viewer, None).await;
    assert_eq!(status, 200);
    let names: BTreeSet<&str> = stats["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["emails"]));
    let (status, page) = https("GET", "/api/v1/queues/emails/jobs".into(), viewer, None).await;
    assert_eq!((status, page["jobs"].as_array().unwrap().len()), (200, 1));
    let (status, answer) = https("GET", "/api/v1/queues/other/jobs".into(), viewer, None).await;
    assert_eq!(status, 403, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("viewer") && message.contains("read") && message.contains("other"),
        "{message}"
    );
    let (status, answer) = https("POST", "/api/v1/queues/emails/purge".into(), viewer, None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );
    let (status, answer) = https(
        "POST",
        "/api/v1/queues/emails/jobs".into(),
        viewer,
        Some(json!({"jobs": [{"payload": "x"}]})),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    let (status, who) = https("GET", "/api/v1/whoami".into(), viewer, None).await;
    assert_eq!(status, 200);
    assert_eq!(who["principal"], "viewer");
    assert_eq!(who["grants"], json!([{"role": "read", "queues": "emails"}]));

    // The operator acts.
    let (status, answer) =
        https("POST", "/api/v1/queues/emails/pause".into(), operator, None).await;
    assert_eq!((status, &answer["paused"]), (200, &json!(true)));
    let (status, _) = https("GET", "/api/v1/cluster".into(), viewer, None).await;
    assert_eq!(status, 200);
    node.shutdown().await.unwrap();
}

/// A value that fits a path parameter of the document.
fn filled(path: &str) -> String {
    path.replace("{queue}", "openapi-check")
        .replace("{job_id}", "0-1-0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let doc: Value = serde_json::from_str(raftq_node::rest::OPENAPI).unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = raftq_node::rest::routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served, "openapi.json and the router differ");
    // Every schema reference resolves.
    let text = raftq_node::rest::OPENAPI;
    for reference in text.split("\"$ref\": \"#/components/").skip(1) {
        let target = reference.split('"').next().unwrap();
        let (kind, name) = target.split_once('/').unwrap();
        assert!(
            doc["components"][kind][name].is_object(),
            "dangling $ref {target}"
        );
    }

    // And each route is served: an answer of its own, not "no route".
    let dir = tempfile::tempdir().unwrap();
    let (node, _client) = common::start_single(dir.path()).await;
    let api = Api::new(&node.addr.to_string());
    for (method, path) in &served {
        let (status, answer) = api.call(method, &filled(path), Some(json!({}))).await;
        let no_route = answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("no API route"));
        assert!(
            !no_route && status != 405,
            "{method} {path}: {status} {answer}"
        );
    }
    let (status, document) = api.get("/api/openapi.json").await;
    assert_eq!((status, document["openapi"].as_str()), (200, Some("3.1.0")));
    node.shutdown().await.unwrap();
}
