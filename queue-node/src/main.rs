//! `queue-node`: runs one raftq node.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use raftq_node::config::{AuthConfig, ClientCerts, NodeConfig, TlsConfig};
use raftq_node::drain::DRAIN_TIMEOUT;
use raftq_node::store::Durability;

// jemalloc keeps freed pages for reuse, where glibc handed large buffers
// back to the kernel only to fault them in, zeroed, again. Rust's
// allocations only: with jemalloc also replacing RocksDB's `malloc`
// (unprefixed), a node started under libfaketime (the clock-jump fault
// test) deadlocked before its first log line.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Runs a raftq queue node. With no flags: a one-node cluster with clients
/// on 127.0.0.1:7400, peers on 127.0.0.1:7401 and its data in ./raftq-data.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// YAML config file; flags override its values.
    #[arg(long, env = "RAFTQ_CONFIG")]
    config: Option<PathBuf>,
    /// This node's id (unique in the cluster, > 0).
    #[arg(long, env = "RAFTQ_NODE_ID")]
    node_id: Option<u64>,
    /// StatefulSet pod index; sets the node id to index + 1 (the operator
    /// passes the pod-index label here).
    #[arg(long, env = "RAFTQ_POD_INDEX", conflicts_with = "node_id")]
    pod_index: Option<u64>,
    /// Data directory (RocksDB).
    #[arg(long, env = "RAFTQ_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The client port (Queue, QueueAdmin).
    #[arg(long, env = "RAFTQ_LISTEN")]
    listen: Option<String>,
    /// The address of the client port clients use.
    #[arg(long, env = "RAFTQ_CLIENT_ADVERTISE")]
    client_advertise: Option<String>,
    /// The peer port (Raft, ClusterAdmin, forwarded requests).
    #[arg(long, env = "RAFTQ_PEER_LISTEN")]
    peer_listen: Option<String>,
    /// The address of the peer port other nodes use to reach this node.
    #[arg(long, env = "RAFTQ_ADVERTISE")]
    advertise: Option<String>,
    /// This node's certificate (PEM): turns TLS on, on both ports.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The cluster CA (PEM): peers' and clients' certificates must be signed by it.
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Client certificates on the client port.
    #[arg(long, value_enum)]
    client_certs: Option<ClientCerts>,
    /// A principals file (tokens' SHA-256 hashes and grants): turns auth
    /// on. Repeat it (or separate with commas) to merge several files.
    #[arg(long, env = "RAFTQ_AUTH_FILE", value_delimiter = ',')]
    auth_file: Vec<PathBuf>,
    /// Refuse to start with a port beyond loopback lacking TLS or auth.
    #[arg(long)]
    require_auth: bool,
    /// Show the web console without any action buttons, whatever the
    /// user's roles.
    #[arg(long)]
    console_read_only: bool,
    /// Do not serve the web console (the REST API stays).
    #[arg(long, conflicts_with = "console_read_only")]
    no_console: bool,
    /// Serve /healthz, /readyz and /metrics over HTTP here, e.g. 127.0.0.1:9400.
    #[arg(long, env = "RAFTQ_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// Initial voters of a new cluster: `1=127.0.0.1:7401,2=127.0.0.1:7402,...`.
    #[arg(long, value_delimiter = ',', value_parser = parse_member)]
    initial_members: Vec<(u64, String)>,
    /// Wait to be added to an existing cluster instead of creating one.
    #[arg(long)]
    join: bool,
    /// Raft groups per node (fixed when the data dir is created).
    #[arg(long, env = "RAFTQ_SHARDS")]
    shards: Option<u32>,
    /// Voters per shard (1, 3 or 5): each node holds only the shards
    /// placed on it. Default: every initial member holds every shard.
    #[arg(long, env = "RAFTQ_REPLICATION_FACTOR")]
    replication_factor: Option<u32>,
    /// fsync (default) or async.
    #[arg(long, value_enum)]
    durability: Option<Durability>,
    #[arg(long)]
    max_batch_ops: Option<usize>,
    #[arg(long)]
    max_batch_bytes: Option<usize>,
    #[arg(long)]
    linger_min_micros: Option<u64>,
    #[arg(long)]
    linger_max_micros: Option<u64>,
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Log filter, e.g. `info` or `raftq_node=debug,openraft=warn`.
    #[arg(long, env = "RAFTQ_LOG", default_value = "info,openraft=warn")]
    log: String,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Ask a running node to hand the shards it leads to its peers (run
    /// before stopping it; the operator's preStop hook does).
    StepDown {
        /// The node's peer port.
        #[arg(long, default_value = "127.0.0.1:7401")]
        addr: String,
        /// The node's config file: with TLS on, the call is made with the
        /// node's own certificate.
        #[arg(long, env = "RAFTQ_CONFIG")]
        config: Option<PathBuf>,
        /// With TLS, the name the node's certificate is checked for: its
        /// advertised peer address (the host part), when `--addr` is
        /// 127.0.0.1 and the certificate names only the pod's DNS names.
        #[arg(long, env = "RAFTQ_ADVERTISE")]
        advertise: Option<String>,
        /// How long to wait for new leaders.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u32,
        /// First end the node's worker streams, as before it stops (they
        /// reconnect elsewhere); the node takes no new ones after.
        #[arg(long)]
        drain_workers: bool,
    },
}

fn parse_member(s: &str) -> Result<(u64, String), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected <node id>=<host:port>, e.g. 1=127.0.0.1:7401"))?;
    let id = id
        .parse()
        .map_err(|_| format!("{s:?}: node id {id:?} is not a number"))?;
    Ok((id, addr.to_string()))
}

fn config_from(args: &Args) -> anyhow::Result<NodeConfig> {
    let mut c = match &args.config {
        Some(path) => NodeConfig::from_file(path)?,
        None => NodeConfig::default(),
    };
    if let Some(v) = args.node_id {
        c.node_id = v;
    }
    if let Some(index) = args.pod_index {
        c.node_id = index + 1;
    }
    if let Some(v) = &args.data_dir {
        c.data_dir = v.clone();
    }
    if let Some(v) = &args.listen {
        c.listen = v.clone();
    }
    if let Some(v) = &args.client_advertise {
        c.client_advertise = Some(v.clone());
    }
    if let Some(v) = &args.peer_listen {
        c.peer_listen = v.clone();
    }
    if let Some(v) = &args.advertise {
        c.advertise = Some(v.clone());
    }
    if let (Some(cert), Some(key), Some(ca)) = (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        let peer_names = c.tls.take().map(|t| t.peer_names).unwrap_or_default();
        c.tls = Some(TlsConfig {
            cert_file: cert.clone(),
            key_file: key.clone(),
            ca_file: ca.clone(),
            client_certs: args.client_certs.unwrap_or_default(),
            peer_names,
        });
    } else if let Some(mode) = args.client_certs {
        match &mut c.tls {
            Some(tls) => tls.client_certs = mode,
            None => anyhow::bail!(
                "--client-certs needs TLS: give --tls-cert, --tls-key and --tls-ca, or `tls` in the config file"
            ),
        }
    }
    if !args.auth_file.is_empty() {
        c.auth = Some(AuthConfig {
            files: args.auth_file.clone(),
        });
    }
    c.require_auth |= args.require_auth;
    c.console.read_only |= args.console_read_only;
    if args.no_console {
        c.console.enabled = false;
    }
    if let Some(v) = &args.http_listen {
        c.http_listen = Some(v.clone());
    }
    if !args.initial_members.is_empty() {
        c.initial_members = args
            .initial_members
            .iter()
            .cloned()
            .collect::<BTreeMap<_, _>>();
    }
    c.join |= args.join;
    if let Some(v) = args.shards {
        c.shards = v;
    }
    if let Some(v) = args.replication_factor {
        c.replication_factor = Some(v);
    }
    if let Some(v) = args.durability {
        c.durability = v;
    }
    let b = &mut c.batching;
    b.max_batch_ops = args.max_batch_ops.unwrap_or(b.max_batch_ops);
    b.max_batch_bytes = args.max_batch_bytes.unwrap_or(b.max_batch_bytes);
    b.linger_min_micros = args.linger_min_micros.unwrap_or(b.linger_min_micros);
    b.linger_max_micros = args.linger_max_micros.unwrap_or(b.linger_max_micros);
    b.max_in_flight = args.max_in_flight.unwrap_or(b.max_in_flight);
    c.validate()?;
    Ok(c)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = config_from(&args)?;
    let mut node = raftq_node::node::start(config).await?;
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    #[cfg(unix)]
    let terminated = term.recv();
    #[cfg(not(unix))]
    let terminated = std::future::pending::<Option<()>>();
    tokio::select! {
        result = node.wait() => return result,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
        _ = terminated => tracing::info!("SIGTERM; handing leadership over, then shutting down"),
    }
    let open = node.context.workers.drain(DRAIN_TIMEOUT).await;
    if open > 0 {
        tracing::warn!(
            open,
            "worker streams still open after {DRAIN_TIMEOUT:?}; closing them anyway"
        );
    }
    raftq_node::handoff::step_down(&node.context, std::time::Duration::from_secs(10)).await;
    node.shutdown().await
}

async fn step_down(
    addr: &str,
    config: Option<&std::path::Path>,
    advertise: Option<&str>,
    timeout_ms: u32,
    drain_workers: bool,
) -> anyhow::Result<()> {
    use raftq_api::v1::cluster_admin_client::ClusterAdminClient;
    let tls = match config {
        Some(path) => NodeConfig::from_file(path)?.tls,
        None => None,
    };
    let tls = tls
        .map(raftq_node::security::tls::TlsState::load)
        .transpose()?
        .map(std::sync::Arc::new);
    let server_name = advertise.map(|a| raftq_node::security::identity::host_of(a).to_string());
    let channel = raftq_node::security::dial::Dialer::new(tls)
        .verifying_name(server_name)
        .channel(addr)
        .with_context(|| format!("bad address {addr}"))?;
    let mut client = ClusterAdminClient::new(channel);
    let answer = client
        .step_down(raftq_api::v1::StepDownRequest {
            timeout_ms,
            drain_workers,
            shard: None,
        })
        .await
        .map_err(|s| match std::error::Error::source(&s) {
            // Made by the transport, not sent by the node: every cause,
            // down to the one that says what to fix (a certificate name).
            Some(cause) => {
                let mut why = cause.to_string();
                let mut next = cause.source();
                while let Some(inner) = next {
                    why = format!("{why}: {inner}");
                    next = inner.source();
                }
                anyhow::anyhow!("cannot reach the node at {addr} (its peer port): {why}")
            }
            None => anyhow::anyhow!("step-down refused by {addr}: {}", s.message()),
        })?
        .into_inner();
    for shard in &answer.shards {
        match shard.new_leader_id {
            0 => eprintln!("shard {}: no peer took over in time", shard.shard),
            id => eprintln!("shard {}: now led by node {id}", shard.shard),
        }
    }
    if answer.shards.is_empty() {
        eprintln!("this node leads no shard that has another voter; nothing to hand over");
    }
    Ok(())
}

/// RocksDB allocates through glibc's `malloc`, which by default hands
/// large freed blocks (write batches, memtable arena blocks) back to the
/// kernel and then faults them in again, zeroed: under enqueue load that
/// cost a node 40% of its throughput. Keep them: a fixed 32 MiB mmap
/// threshold (the most glibc allows) and no trimming below 1 GiB. And at
/// most four arenas: by default glibc gives threads up to eight per core,
/// each keeping its own freed memory, and the blocking threads that read
/// job contents grew a node serving a 10 M backlog by 600 MiB of idle
/// heap (100 MiB with four arenas, at the same throughput).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator tunables; it is called once,
    // before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("queue-node: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match &args.command {
        Some(Command::StepDown {
            addr,
            config,
            advertise,
            timeout_ms,
            drain_workers,
        }) => runtime.block_on(step_down(
            addr,
            config.as_deref(),
            advertise.as_deref(),
            *timeout_ms,
            *drain_workers,
        )),
        None => runtime.block_on(run(args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("queue-node: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
