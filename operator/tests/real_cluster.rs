//! The operator against a real Kubernetes control plane (etcd,
//! kube-apiserver, kube-controller-manager from `../shared/k8s/`), run as
//! its own process with its CRD installed the way a user installs it.
//!
//! What a mocked API server cannot show: that a new JobQueue is reconciled
//! at all (the watch filter and the finalizer write), that a deleted owned
//! object comes back at once, and that a stopping operator releases its
//! leader Lease. Skipped, with a message, where the control plane is not
//! there (set `RAFTQ_K8S_DIR` to its folder, or keep it at `../shared/k8s`
//! beside the checkout).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, PostParams};
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
struct ControlPlane {
    dir: PathBuf,
    state: tempfile::TempDir,
}

impl ControlPlane {
    fn up() -> Option<ControlPlane> {
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

    fn kubeconfig(&self) -> PathBuf {
        self.state.path().join("admin.kubeconfig")
    }

    async fn client(&self) -> Client {
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
struct Operator {
    child: Child,
}

impl Operator {
    fn start(plane: &ControlPlane, identity: &str) -> Operator {
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
    fn stop(mut self) -> std::process::ExitStatus {
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

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
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

async fn install_crd(client: &Client) {
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

fn dev_jobqueue(name: &str) -> JobQueue {
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/dev-jobqueue.yaml"),
    )
    .expect("examples/dev-jobqueue.yaml");
    let mut jq: JobQueue = serde_yaml::from_str(&yaml).expect("the example parses");
    jq.metadata.name = Some(name.into());
    jq
}

/// Create → reconciled (no later edit needed); a deleted owned Service and
/// ConfigMap come back well before the idle requeue; SIGTERM releases the
/// Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_on_a_real_api_server() {
    let Some(plane) = ControlPlane::up() else {
        return;
    };
    let client = plane.client().await;
    install_crd(&client).await;
    let operator = Operator::start(&plane, "operator-a");

    let queues: Api<JobQueue> = Api::namespaced(client.clone(), "default");
    queues
        .create(&PostParams::default(), &dev_jobqueue("dev"))
        .await
        .expect("create the JobQueue");

    // A new JobQueue is reconciled on its own: the StatefulSet appears and
    // a status is written, without any later edit of the spec.
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    wait_for(
        "the StatefulSet of a new JobQueue",
        Duration::from_secs(30),
        || async { sets.get_opt("dev").await.ok().flatten() },
    )
    .await;
    let phase = wait_for("a status phase", Duration::from_secs(30), || async {
        let jq = queues.get("dev").await.ok()?;
        jq.status.map(|s| s.phase).filter(|p| !p.is_empty())
    })
    .await;
    assert_ne!(
        phase, "Running",
        "no pods run here, yet the status says Running"
    );

    // Owned objects are watched: a deleted Service and ConfigMap come back
    // at once (the idle requeue is 60 s; 20 s tells the two apart).
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let old_uid = services
        .get("dev")
        .await
        .expect("client Service")
        .metadata
        .uid;
    services
        .delete("dev", &DeleteParams::default())
        .await
        .expect("delete the client Service");
    wait_for(
        "the client Service to come back",
        Duration::from_secs(20),
        || async {
            let svc = services.get_opt("dev").await.ok().flatten()?;
            (svc.metadata.uid != old_uid && svc.metadata.deletion_timestamp.is_none()).then_some(())
        },
    )
    .await;
    let old_uid = maps
        .get("dev-config")
        .await
        .expect("ConfigMap")
        .metadata
        .uid;
    maps.delete("dev-config", &DeleteParams::default())
        .await
        .expect("delete the ConfigMap");
    wait_for(
        "the ConfigMap to come back",
        Duration::from_secs(20),
        || async {
            let map = maps.get_opt("dev-config").await.ok().flatten()?;
            (map.metadata.uid != old_uid).then_some(())
        },
    )
    .await;

    // A graceful stop releases the leader Lease: a standby need not wait
    // for it to expire.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let held = leases
        .get("raftq-operator-leader")
        .await
        .expect("the leader Lease");
    assert_eq!(
        held.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("operator-a")
    );
    let status = operator.stop();
    assert!(status.success(), "the operator exited with {status}");
    let released = leases
        .get("raftq-operator-leader")
        .await
        .expect("the leader Lease");
    assert_eq!(
        released.spec.and_then(|s| s.holder_identity),
        None,
        "the Lease still names a holder after a graceful stop"
    );

    // A second operator takes over at once and reconciles a new JobQueue.
    let _standby = Operator::start(&plane, "operator-b");
    queues
        .create(&PostParams::default(), &dev_jobqueue("second"))
        .await
        .expect("create a second JobQueue");
    wait_for(
        "the second JobQueue's StatefulSet",
        Duration::from_secs(30),
        || async { sets.get_opt("second").await.ok().flatten() },
    )
    .await;

    // Deleting a JobQueue runs the finalizer and removes it.
    queues
        .delete("second", &DeleteParams::default())
        .await
        .expect("delete the JobQueue");
    wait_for(
        "the deleted JobQueue to go",
        Duration::from_secs(30),
        || async {
            queues
                .get_opt("second")
                .await
                .ok()
                .and_then(|q| q.is_none().then_some(()))
        },
    )
    .await;
}
