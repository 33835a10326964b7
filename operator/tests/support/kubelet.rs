//! A kubelet for a control plane that has none: it runs the Pods of one
//! namespace as real `queue-node` processes on this machine.
//!
//! What it does, as a kubelet would: registers a Node and keeps its Ready
//! condition fresh; binds each new Pod to it; mounts its ConfigMap and
//! Secret volumes (files in a directory, refreshed every few seconds as a
//! kubelet does, so a rotated certificate reaches the running node) and
//! its PersistentVolumeClaims (a directory per claim, so a claim deleted
//! on scale-down comes back empty); starts the
//! container with the Pod's args and environment (field references and
//! `$(VAR)` expanded); restarts it when it exits; probes `readinessProbe`
//! and writes the Pod's status (phase, IP, Ready); and on deletion runs the
//! `preStop` command, sends SIGTERM, waits out the grace period, kills, and
//! confirms the deletion.
//!
//! What stands in for the pod's own network and mount namespaces: every
//! Pod gets a loopback address of its own (127.x.y.z), its DNS name
//! (`hostname.subdomain.namespace.svc`) resolves to it through a marked
//! block of `/etc/hosts`, and the node is told to listen on that address
//! instead of 0.0.0.0 and to keep its data in the claim's directory
//! (`RAFTQ_LISTEN`, `RAFTQ_PEER_LISTEN`, `RAFTQ_HTTP_LISTEN`,
//! `RAFTQ_DATA_DIR`); a path under a mount point, in the container's
//! arguments or in a ConfigMap file, is rewritten to the volume's
//! directory here; a `preStop` command that dials 127.0.0.1 dials the
//! Pod's address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Binding, ConfigMap, Container, Node, ObjectReference, PersistentVolumeClaim, Pod, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::hosts::HostsBlock;

const NODE: &str = "raftq-test-kubelet";
const SYNC_EVERY: Duration = Duration::from_millis(250);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
/// How often ConfigMap and Secret volumes are brought up to date.
const REFRESH_VOLUMES_EVERY: Duration = Duration::from_secs(2);

/// Runs until dropped; every process it started is killed with it.
pub struct Kubelet {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    _root: tempfile::TempDir,
}

struct Shared {
    client: Client,
    namespace: String,
    bin: PathBuf,
    root: PathBuf,
    hosts: HostsBlock,
    /// 127.a.b.0/24, this process's pod network.
    subnet: [u8; 3],
    /// Pod name → address, kept across restarts of the Pod.
    ips: Mutex<BTreeMap<String, Ipv4Addr>>,
    running: Mutex<BTreeMap<String, Running>>,
    /// Uids of Pods being stopped.
    terminating: Mutex<BTreeSet<String>>,
    /// Pods started, by name (a restarted container counts again).
    starts: Mutex<BTreeMap<String, u32>>,
    /// The Nodes it runs pods on, each in its own zone (one Node without
    /// a zone when none are given): pod ordinal i goes to Node i mod n.
    nodes: Vec<(String, Option<String>)>,
}

struct Running {
    uid: String,
    child: Child,
    ip: Ipv4Addr,
    launch: Launch,
    /// (port, path) of the readiness probe.
    probe: Option<(u16, String)>,
    ready: bool,
    restarts: i32,
    started_at: String,
    volumes: Vec<FilledVolume>,
    /// (container path, directory here) of every mount.
    mount_paths: Vec<(String, PathBuf)>,
    refreshed: tokio::time::Instant,
}

/// A volume whose files come from an API object.
#[derive(Clone)]
struct FilledVolume {
    dir: PathBuf,
    source: VolumeSource,
}

#[derive(Clone)]
enum VolumeSource {
    ConfigMap(String),
    Secret(String),
}

/// How to start the Pod's container again.
#[derive(Clone)]
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
}

impl Kubelet {
    /// Starts serving `namespace`. `Err` says why this machine cannot host
    /// pods (no writable `/etc/hosts`).
    pub async fn start(client: Client, namespace: &str, bin: PathBuf) -> Result<Kubelet, String> {
        Kubelet::start_in_zones(client, namespace, bin, &[]).await
    }

    /// Like [`Kubelet::start`], with one Node per zone of `zones`, each
    /// labelled `topology.kubernetes.io/zone`.
    pub async fn start_in_zones(
        client: Client,
        namespace: &str,
        bin: PathBuf,
        zones: &[&str],
    ) -> Result<Kubelet, String> {
        let nodes: Vec<(String, Option<String>)> = if zones.is_empty() {
            vec![(NODE.to_string(), None)]
        } else {
            zones
                .iter()
                .map(|z| (format!("{NODE}-{z}"), Some(z.to_string())))
                .collect()
        };
        let hosts = HostsBlock::claim()?;
        let root = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let pid = std::process::id();
        let shared = Arc::new(Shared {
            client,
            namespace: namespace.into(),
            bin,
            root: root.path().to_path_buf(),
            hosts,
            subnet: [127, 100 + (pid % 100) as u8, (pid / 100 % 250) as u8],
            ips: Mutex::default(),
            running: Mutex::default(),
            terminating: Mutex::default(),
            starts: Mutex::default(),
            nodes,
        });
        for (node, zone) in &shared.nodes {
            register_node(&shared.client, node, zone.as_deref()).await?;
        }
        let task = tokio::spawn(run(shared.clone()));
        Ok(Kubelet {
            shared,
            task,
            _root: root,
        })
    }

    /// Names of the Pods whose container runs now.
    pub fn running(&self) -> BTreeSet<String> {
        lock(&self.shared.running).keys().cloned().collect()
    }

    /// How many times a container of Pod `name` was started.
    pub fn starts(&self, name: &str) -> u32 {
        lock(&self.shared.starts).get(name).copied().unwrap_or(0)
    }

    /// The last lines of Pod `name`'s container log, for failure messages.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let dir = self.shared.root.join("logs");
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut files: Vec<_> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|f| f.to_str())
                        .is_some_and(|f| f.starts_with(&format!("{name}.")))
                })
                .collect();
            files.sort();
            for f in files {
                text.push_str(&std::fs::read_to_string(&f).unwrap_or_default());
            }
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        if std::thread::panicking() {
            let names: BTreeSet<String> = lock(&self.shared.starts).keys().cloned().collect();
            for name in names {
                eprintln!(
                    "--- pod {name}, last lines of its log:\n{}",
                    self.log_tail(&name, 40)
                );
            }
        }
        // Children are started with kill_on_drop.
        lock(&self.shared.running).clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

async fn register_node(client: &Client, name: &str, zone: Option<&str>) -> Result<(), String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: zone
                .map(|z| [("topology.kubernetes.io/zone".to_string(), z.to_string())].into()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(format!("register Node {name}: {e}")),
    }
    heartbeat(client, name).await
}

/// The Node's Ready condition, renewed so the node lifecycle controller
/// never evicts the Pods.
async fn heartbeat(client: &Client, node: &str) -> Result<(), String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let at = now();
    let status = serde_json::json!({"status": {"conditions": [{
        "type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "raftq test kubelet", "lastHeartbeatTime": at, "lastTransitionTime": at,
    }]}});
    nodes
        .patch_status(node, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|e| format!("Node {node} status: {e}"))?;
    Ok(())
}

async fn run(shared: Arc<Shared>) {
    let mut last_beat = tokio::time::Instant::now();
    loop {
        if let Err(e) = sync(&shared).await {
            eprintln!("test kubelet: {e}");
        }
        if last_beat.elapsed() >= HEARTBEAT_EVERY {
            for (node, _) in &shared.nodes {
                if let Err(e) = heartbeat(&shared.client, node).await {
                    eprintln!("test kubelet: {e}");
                }
            }
            last_beat = tokio::time::Instant::now();
        }
        tokio::time::sleep(SYNC_EVERY).await;
    }
}

/// One pass: every Pod of the namespace brought to what the API says.
async fn sync(shared: &Arc<Shared>) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &shared.namespace);
    let list = pods
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list pods: {e}"))?;
    let mut listed = BTreeSet::new();
    for pod in list.items {
        let (Some(name), Some(uid)) = (pod.metadata.name.clone(), pod.metadata.uid.clone()) else {
            continue;
        };
        listed.insert(name.clone());
        if lock(&shared.terminating).contains(&uid) {
            continue;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            let proc = {
                let mut running = lock(&shared.running);
                match running.get(&name) {
                    Some(r) if r.uid == uid => running.remove(&name),
                    _ => None,
                }
            };
            lock(&shared.terminating).insert(uid.clone());
            tokio::spawn(terminate(shared.clone(), pod, proc));
            continue;
        }
        let same = lock(&shared.running).get(&name).map(|r| r.uid == uid);
        match same {
            Some(true) => tend(shared, &name).await?,
            // The old Pod of this name went without us stopping it.
            Some(false) => {
                lock(&shared.running).remove(&name);
                start(shared, &pod).await?;
            }
            None => start(shared, &pod).await?,
        }
    }
    lock(&shared.running).retain(|name, _| listed.contains(name));
    Ok(())
}

/// Restarts an exited container, keeps its volumes current and follows
/// its readiness.
async fn tend(shared: &Arc<Shared>, name: &str) -> Result<(), String> {
    let due = {
        let mut running = lock(&shared.running);
        match running.get_mut(name) {
            Some(r) if r.refreshed.elapsed() >= REFRESH_VOLUMES_EVERY => {
                r.refreshed = tokio::time::Instant::now();
                Some((r.volumes.clone(), r.mount_paths.clone()))
            }
            _ => None,
        }
    };
    if let Some((volumes, mount_paths)) = due {
        for volume in &volumes {
            // As a kubelet does: a source gone for now leaves the files
            // as they were.
            if let Err(e) = fill(shared, volume, &mount_paths).await {
                eprintln!("test kubelet: pod {name}: {e}; its last files stay");
            }
        }
    }
    let (probe, ip, was_ready, exited) = {
        let mut running = lock(&shared.running);
        let Some(r) = running.get_mut(name) else {
            return Ok(());
        };
        let exited = matches!(r.child.try_wait(), Ok(Some(_)));
        if exited {
            r.restarts += 1;
            r.child = spawn(&r.launch)?;
            r.started_at = now();
            *lock(&shared.starts).entry(name.to_string()).or_default() += 1;
        }
        (r.probe.clone(), r.ip, r.ready, exited)
    };
    let ready = match &probe {
        Some((port, path)) => !exited && http_ok(ip, *port, path).await,
        None => !exited,
    };
    if ready != was_ready || exited {
        let status = {
            let mut running = lock(&shared.running);
            let Some(r) = running.get_mut(name) else {
                return Ok(());
            };
            r.ready = ready;
            pod_status(r)
        };
        let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &shared.namespace);
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(|e| format!("status of pod {name}: {e}"))?;
    }
    Ok(())
}

/// Binds, mounts and starts a new Pod.
async fn start(shared: &Arc<Shared>, pod: &Pod) -> Result<(), String> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let spec = pod.spec.as_ref().ok_or("pod without spec")?;
    let [container] = spec.containers.as_slice() else {
        return Err(format!("pod {name}: one container expected"));
    };
    let ip = {
        let mut ips = lock(&shared.ips);
        let next = ips.len() as u8 + 10;
        let [a, b, c] = shared.subnet;
        *ips.entry(name.clone())
            .or_insert(Ipv4Addr::new(a, b, c, next))
    };
    if let (Some(host), Some(sub)) = (&spec.hostname, &spec.subdomain) {
        let ns = &shared.namespace;
        shared.hosts.add(&format!("{host}.{sub}.{ns}.svc"), ip);
        shared
            .hosts
            .add(&format!("{host}.{sub}.{ns}.svc.cluster.local"), ip);
    }
    if spec.node_name.is_none() {
        bind(shared, &name).await?;
    }

    // Volumes: a directory per ConfigMap or Secret volume, one per claim.
    let mut mounts: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut filled = Vec::new();
    let pod_dir = shared.root.join("pods").join(&uid);
    for volume in spec.volumes.iter().flatten() {
        let source = if let Some(cm) = &volume.config_map {
            Some(VolumeSource::ConfigMap(cm.name.clone()))
        } else {
            volume
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.clone())
                .map(VolumeSource::Secret)
        };
        let dir = if let Some(source) = source {
            let dir = pod_dir.join(&volume.name);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            filled.push(FilledVolume {
                dir: dir.clone(),
                source,
            });
            dir
        } else if let Some(claim) = &volume.persistent_volume_claim {
            let claims: Api<PersistentVolumeClaim> =
                Api::namespaced(shared.client.clone(), &shared.namespace);
            let pvc = claims
                .get(&claim.claim_name)
                .await
                .map_err(|e| format!("pod {name}: claim {}: {e}", claim.claim_name))?;
            let dir = shared
                .root
                .join("claims")
                .join(pvc.metadata.uid.unwrap_or_default());
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            dir
        } else {
            continue; // the service account token: the nodes do not use it
        };
        mounts.insert(volume.name.clone(), dir);
    }
    let mount_paths: Vec<(String, PathBuf)> = container
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| Some((m.mount_path.clone(), mounts.get(&m.name)?.clone())))
        .collect();
    // As a kubelet does: the container starts once every volume is there
    // (a missing Secret keeps the Pod waiting; the next pass retries).
    for volume in &filled {
        fill(shared, volume, &mount_paths)
            .await
            .map_err(|e| format!("pod {name}: {e}"))?;
    }

    let mut env = container_env(pod, container, ip)?;
    // The pod's own network and volumes (see the module docs).
    let port = |name: &str| {
        container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
    };
    if let Some(p) = port("grpc") {
        env.push(("RAFTQ_LISTEN".into(), format!("{ip}:{p}")));
    }
    if let Some(p) = port("peer") {
        env.push(("RAFTQ_PEER_LISTEN".into(), format!("{ip}:{p}")));
    }
    if let Some(p) = port("http") {
        env.push(("RAFTQ_HTTP_LISTEN".into(), format!("{ip}:{p}")));
    }
    if let Some(dir) = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "data")
        .and_then(|m| mounts.get(&m.name))
    {
        env.push(("RAFTQ_DATA_DIR".into(), dir.display().to_string()));
    }
    let command = container
        .command
        .clone()
        .unwrap_or_else(|| vec!["queue-node".into()]);
    let mut args: Vec<String> = command[1..].to_vec();
    args.extend(container.args.iter().flatten().cloned());
    let args = args
        .into_iter()
        .map(|a| expand(&a, &env))
        .map(|a| in_mounts(&a, &mount_paths))
        .collect();
    let logs = shared.root.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let launch = Launch {
        program: program(shared, &command[0])?,
        args,
        env,
        log: logs.join(format!("{name}.{}.log", &uid[..8.min(uid.len())])),
    };
    let probe = container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .map(|get| {
            let port = match &get.port {
                IntOrString::Int(p) => *p,
                IntOrString::String(named) => port(named).unwrap_or(0),
            };
            (port as u16, get.path.clone().unwrap_or_else(|| "/".into()))
        });
    let child = spawn(&launch)?;
    *lock(&shared.starts).entry(name.clone()).or_default() += 1;
    let running = Running {
        uid,
        child,
        ip,
        launch,
        probe,
        ready: false,
        restarts: 0,
        started_at: now(),
        volumes: filled,
        mount_paths,
        refreshed: tokio::time::Instant::now(),
    };
    let status = pod_status(&running);
    lock(&shared.running).insert(name.clone(), running);
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &shared.namespace);
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|e| format!("status of pod {name}: {e}"))?;
    Ok(())
}

/// Schedules the Pod onto this kubelet's Node.
async fn bind(shared: &Shared, name: &str) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &shared.namespace);
    // Pod ordinal i on Node i mod n.
    let ordinal: usize = name
        .rsplit_once('-')
        .and_then(|(_, o)| o.parse().ok())
        .unwrap_or(0);
    let node = &shared.nodes[ordinal % shared.nodes.len()].0;
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.clone()),
            ..ObjectReference::default()
        },
    };
    pods.create_subresource::<_, serde_json::Value>(
        "binding",
        name,
        &PostParams::default(),
        &binding,
    )
    .await
    .map_err(|e| format!("bind pod {name}: {e}"))?;
    Ok(())
}

/// The image's binaries are this build's: `queue-node` only.
fn program(shared: &Shared, name: &str) -> Result<PathBuf, String> {
    match name {
        "queue-node" => Ok(shared.bin.clone()),
        other => Err(format!("the test kubelet cannot run {other:?}")),
    }
}

/// The container's environment: literal values with `$(VAR)` expanded,
/// and the field references a Pod of the StatefulSet uses.
fn container_env(
    pod: &Pod,
    container: &Container,
    ip: Ipv4Addr,
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container.env.iter().flatten() {
        let value = if let Some(field) = var.value_from.as_ref().and_then(|v| v.field_ref.as_ref())
        {
            field_value(pod, &field.field_path, ip)?
        } else {
            expand(var.value.as_deref().unwrap_or_default(), &env)
        };
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

fn field_value(pod: &Pod, path: &str, ip: Ipv4Addr) -> Result<String, String> {
    let meta = &pod.metadata;
    if let Some(label) = path
        .strip_prefix("metadata.labels['")
        .and_then(|rest| rest.strip_suffix("']"))
    {
        return meta
            .labels
            .as_ref()
            .and_then(|l| l.get(label))
            .cloned()
            .ok_or_else(|| format!("pod has no label {label}"));
    }
    match path {
        "metadata.name" => Ok(meta.name.clone().unwrap_or_default()),
        "metadata.namespace" => Ok(meta.namespace.clone().unwrap_or_default()),
        "status.podIP" => Ok(ip.to_string()),
        other => Err(format!("the test kubelet does not know field {other}")),
    }
}

/// Kubernetes' `$(VAR)` expansion against the variables defined so far.
fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// A path under a mount point, as the container sees it → on this machine
/// (the deepest mount point that holds it).
fn in_mounts(arg: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut best: Option<(&str, &PathBuf)> = None;
    for (at, dir) in mounts {
        if let Some(rest) = arg.strip_prefix(at.as_str()) {
            if (rest.is_empty() || rest.starts_with('/'))
                && best.is_none_or(|(b, _)| at.len() > b.len())
            {
                best = Some((at, dir));
            }
        }
    }
    match best {
        Some((at, dir)) => format!("{}{}", dir.display(), &arg[at.len()..]),
        None => arg.to_string(),
    }
}

/// Every mount path in `text` (a config file) → its directory here.
fn paths_in_text(text: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut sorted: Vec<&(String, PathBuf)> = mounts.iter().collect();
    sorted.sort_by_key(|(at, _)| std::cmp::Reverse(at.len()));
    let mut out = text.to_string();
    for (at, dir) in sorted {
        out = out.replace(&format!("{at}/"), &format!("{}/", dir.display()));
    }
    out
}

fn short(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Writes the files of a ConfigMap or Secret volume that changed, each
/// by rename so a reader never sees half a file.
async fn fill(
    shared: &Shared,
    volume: &FilledVolume,
    mounts: &[(String, PathBuf)],
) -> Result<(), String> {
    let files: Vec<(String, Vec<u8>)> = match &volume.source {
        VolumeSource::ConfigMap(cm) => {
            let maps: Api<ConfigMap> = Api::namespaced(shared.client.clone(), &shared.namespace);
            let map = maps
                .get(cm)
                .await
                .map_err(|e| format!("ConfigMap {cm}: {}", short(&e)))?;
            map.data
                .unwrap_or_default()
                .into_iter()
                .map(|(file, text)| (file, paths_in_text(&text, mounts).into_bytes()))
                .collect()
        }
        VolumeSource::Secret(secret) => {
            let secrets: Api<Secret> = Api::namespaced(shared.client.clone(), &shared.namespace);
            let s = secrets
                .get(secret)
                .await
                .map_err(|e| format!("Secret {secret}: {}", short(&e)))?;
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(file, bytes)| (file, bytes.0))
                .collect()
        }
    };
    for (file, bytes) in files {
        let path = volume.dir.join(&file);
        if std::fs::read(&path).ok().as_deref() == Some(bytes.as_slice()) {
            continue;
        }
        let tmp = volume.dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, &bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn spawn(launch: &Launch) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
        .map_err(|e| format!("{}: {e}", launch.log.display()))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&launch.program);
    cmd.args(&launch.args)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err)
        .kill_on_drop(true);
    // Only what the Pod defines: nothing of the test's own RAFTQ_* settings.
    for (k, _) in std::env::vars() {
        if k.starts_with("RAFTQ_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(launch.env.iter().map(|(k, v)| (k, v)));
    cmd.spawn()
        .map_err(|e| format!("start {}: {e}", launch.program.display()))
}

fn pod_status(r: &Running) -> serde_json::Value {
    let ready = if r.ready { "True" } else { "False" };
    let at = now();
    serde_json::json!({"status": {
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "podIP": r.ip.to_string(),
        "podIPs": [{"ip": r.ip.to_string()}],
        "startTime": r.started_at,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": r.started_at},
            {"type": "Initialized", "status": "True", "lastTransitionTime": r.started_at},
            {"type": "ContainersReady", "status": ready, "lastTransitionTime": at},
            {"type": "Ready", "status": ready, "lastTransitionTime": at},
        ],
        "containerStatuses": [{
            "name": "queue-node", "image": "raftq/queue-node", "imageID": "",
            "ready": r.ready, "started": true, "restartCount": r.restarts,
            "state": {"running": {"startedAt": r.started_at}},
        }],
    }})
}

/// GET `path` answered 200.
async fn http_ok(ip: Ipv4Addr, port: u16, path: &str) -> bool {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.ends_with(b" 200"))
    };
    tokio::time::timeout(Duration::from_secs(1), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Stops a deleted Pod as the kubelet does, then confirms the deletion.
async fn terminate(shared: Arc<Shared>, pod: Pod, running: Option<Running>) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if let Some(mut r) = running {
        let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(grace.max(0) as u64);
        let pre_stop = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.lifecycle.as_ref())
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.exec.as_ref())
            .and_then(|e| e.command.clone());
        if let Some(command) = pre_stop {
            run_pre_stop(&shared, &r, &command, deadline).await;
        }
        if let Some(pid) = r.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout_at(deadline, r.child.wait())
            .await
            .is_err()
        {
            let _ = r.child.kill().await;
        }
    }
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &shared.namespace);
    let confirm = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    if let Err(e) = pods.delete(&name, &confirm).await {
        let gone = matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409);
        if !gone {
            eprintln!("test kubelet: confirm deletion of pod {name}: {e}");
        }
    }
    lock(&shared.terminating).remove(&uid);
}

/// The `preStop` exec hook, inside the Pod: 127.0.0.1 is the Pod itself.
async fn run_pre_stop(
    shared: &Shared,
    r: &Running,
    command: &[String],
    deadline: tokio::time::Instant,
) {
    let Some((first, rest)) = command.split_first() else {
        return;
    };
    let program = match program(shared, first) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("test kubelet: preStop: {e}");
            return;
        }
    };
    let args: Vec<String> = rest
        .iter()
        .map(|a| a.replace("127.0.0.1", &r.ip.to_string()))
        .map(|a| in_mounts(&a, &r.mount_paths))
        .collect();
    let hook = Launch {
        program,
        args,
        env: r.launch.env.clone(),
        log: r.launch.log.clone(),
    };
    match spawn(&hook) {
        Ok(mut child) => {
            if tokio::time::timeout_at(deadline, child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        Err(e) => eprintln!("test kubelet: preStop: {e}"),
    }
}
