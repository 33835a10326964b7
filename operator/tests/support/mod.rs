//! What the real-cluster operator tests share: the control plane from
//! `../shared/k8s/`, the operator as its own process, and waiting on a
//! condition with a deadline.

#![allow(dead_code)] // each test binary uses its own part of this

pub mod hosts;
pub mod kubelet;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, CustomResourceExt};
use raftq_operator::crd::JobQueue;

/// The control plane's folder, if this machine has one.
fn k8s_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("RAFTQ_K8S_DIR") {
        return Some(PathBuf::from(dir));
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/k8s");
    beside.join("up.sh").exists().then_some(beside)
}

/// A running control plane; stopped (and its state removed) on drop.
pub struct ControlPlane {
    dir: PathBuf,
    state: tempfile::TempDir,
}

impl ControlPlane {
    /// `None`, with a message saying so, where the machine has none.
    pub fn up() -> Option<ControlPlane> {
        let Some(dir) = k8s_dir() else {
            eprintln!(
                "SKIPPED: no Kubernetes control plane (../shared/k8s or RAFTQ_K8S_DIR); the real-cluster operator tests did not run"
            );
            return None;
        };
        let state = tempfile::tempdir().expect("state dir");
        let out = Command::new(dir.join("up.sh"))
            .arg(state.path())
            .stderr(Stdio::inherit())
            .output()
            .expect("run up.sh");
        assert!(out.status.success(), "the control plane did not come up");
        Some(ControlPlane { dir, state })
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.state.path().join("admin.kubeconfig")
    }

    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig()).expect("admin kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kube config");
        Client::try_from(config).expect("kube client")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new(self.dir.join("down.sh"))
            .arg(self.state.path())
            .env("K8S_KEEP", "1")
            .status();
    }
}

/// A `raftq-operator run` process; killed on drop.
pub struct Operator {
    child: Child,
}

impl Operator {
    pub fn start(plane: &ControlPlane, identity: &str) -> Operator {
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let child = Command::new(env!("CARGO_BIN_EXE_raftq-operator"))
            .arg("run")
            .env("KUBECONFIG", plane.kubeconfig())
            .env("METRICS_ADDR", metrics.to_string())
            .env("POD_NAMESPACE", "default")
            .env("POD_NAME", identity)
            .env("RAFTQ_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the operator");
        Operator { child }
    }

    /// SIGTERM, and waits for the exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the operator did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Installs the CRD as a user does, and waits until the API serves it.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &JobQueue::crd())
        .await
        .expect("create the CRD");
    wait_for(
        "the CRD to be established",
        Duration::from_secs(30),
        || async {
            let crd = crds.get("jobqueues.raftq.dev").await.ok()?;
            let established = crd
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        },
    )
    .await;
}

/// `examples/<file>` as a JobQueue named `name`.
pub fn example(file: &str, name: &str) -> JobQueue {
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(file),
    )
    .unwrap_or_else(|e| panic!("examples/{file}: {e}"));
    let mut jq: JobQueue = serde_yaml::from_str(&yaml).expect("the example parses");
    jq.metadata.name = Some(name.into());
    jq
}

/// The `queue-node` binary `cargo test --workspace` builds beside the tests.
pub fn queue_node_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join(format!("queue-node{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (it builds queue-node)",
        bin.display()
    );
    bin
}
