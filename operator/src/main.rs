//! `raftq-operator`: runs the JobQueue controller, or prints the CRD.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::events::Reporter;
use kube::runtime::{reflector, watcher, Controller, WatchStreamExt};
use kube::{Api, Client, CustomResourceExt};
use raftq_operator::crd::JobQueue;
use raftq_operator::leader::LeaseLock;
use raftq_operator::membership::GrpcNodeAdmin;
use raftq_operator::metrics::{self, Metrics};
use raftq_operator::reconcile::{self, Context};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Reconciles raftq JobQueue resources into Raft StatefulSets"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Log filter, e.g. `info` or `raftq_operator=debug`.
    #[arg(long, env = "RAFTQ_LOG", default_value = "info", global = true)]
    log: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the JobQueue CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller (the default).
    Run(RunArgs),
}

#[derive(Debug, Parser)]
struct RunArgs {
    /// Manage JobQueues only in these namespaces (comma-separated); every
    /// namespace when empty.
    #[arg(
        long,
        env = "WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    namespaces: Vec<String>,
    /// Serves /healthz, /readyz and /metrics.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Namespace of the leader-election Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "raftq-operator")]
    identity: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match args.command {
        Some(Command::Crd) => print_crd(),
        Some(Command::Run(run_args)) => run_blocking(run_args),
        None => run_blocking(RunArgs::parse_from(["raftq-operator"])),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftq-operator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn print_crd() -> anyhow::Result<()> {
    let yaml = serde_yaml::to_string(&JobQueue::crd()).context("rendering the CRD")?;
    print!("{yaml}");
    Ok(())
}

fn run_blocking(args: RunArgs) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()
        .context("starting the async runtime")?
        .block_on(run(args))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or kubeconfig)")?;
    let metrics = Arc::new(Metrics::default());
    let server = tokio::spawn(metrics::serve(args.metrics_addr, metrics.clone()));

    let lock = LeaseLock {
        api: Api::namespaced(client.clone(), &args.lease_namespace),
        name: "raftq-operator-leader".into(),
        holder: args.identity.clone(),
        duration: Duration::from_secs(15),
    };
    tracing::info!(identity = %args.identity, "waiting for the leader lease");
    lock.acquire().await;
    metrics.leading.set(1);
    tracing::info!("leader lease acquired; reconciling");

    let namespaces: Vec<Option<String>> = {
        let listed: Vec<Option<String>> = args
            .namespaces
            .iter()
            .filter(|n| !n.is_empty())
            .map(|n| Some(n.clone()))
            .collect();
        if listed.is_empty() {
            vec![None]
        } else {
            listed
        }
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        failures: Default::default(),
        nodes: Arc::new(GrpcNodeAdmin::default()),
        reporter: Reporter {
            controller: "raftq-operator".into(),
            instance: Some(args.identity.clone()),
        },
        metrics: metrics.clone(),
        operator_namespace: args.lease_namespace.clone(),
    });
    let mut controllers = Vec::new();
    for ns in &namespaces {
        let (queues, owned): (Api<JobQueue>, OwnedApis) = match ns {
            None => (Api::all(client.clone()), OwnedApis::all(&client)),
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                OwnedApis::namespaced(&client, ns),
            ),
        };
        let scope = ns.as_deref().unwrap_or("all namespaces");
        queues
            .list(&kube::api::ListParams::default().limit(1))
            .await
            .with_context(|| format!("listing JobQueues in {scope}: is the CRD installed (`raftq-operator crd | kubectl apply -f -`) and may this service account read them?"))?;
        tracing::info!(scope, "watching JobQueues");
        // Status writes must not trigger another reconcile, but everything
        // the reconciler itself waits on must: a spec change (generation),
        // the finalizer it just added (no new generation), a deletion.
        let (reader, writer) = reflector::store();
        let stream = watcher(queues, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .applied_objects()
            .predicate_filter(reconcile::worth_reconciling, Default::default());
        controllers.push(
            Controller::for_stream(stream, reader)
                .owns(owned.stateful_sets, watcher::Config::default())
                .owns(owned.config_maps, watcher::Config::default())
                .owns(owned.services, watcher::Config::default())
                .owns(owned.disruption_budgets, watcher::Config::default())
                .shutdown_on_signal()
                .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
                .for_each(|_| futures::future::ready(())),
        );
    }
    let controllers = futures::future::join_all(controllers);

    let outcome = tokio::select! {
        _ = controllers => {
            tracing::info!("controller stopped");
            Ok(())
        }
        held = lock.hold() => held,
        served = server => served.context("metrics server task").and_then(|s| s),
    };
    // A standby takes over at once instead of waiting out the lease.
    if let Err(e) = lock.release().await {
        tracing::warn!(error = %e, "could not release the leader lease; a standby takes over when it expires");
    } else {
        tracing::info!("leader lease released");
    }
    metrics.leading.set(0);
    outcome
}

/// The kinds the operator creates for a JobQueue; a change to any of them
/// (a deleted Service, an edited ConfigMap) reconciles its owner.
struct OwnedApis {
    stateful_sets: Api<StatefulSet>,
    config_maps: Api<ConfigMap>,
    services: Api<Service>,
    disruption_budgets: Api<PodDisruptionBudget>,
}

impl OwnedApis {
    fn all(client: &Client) -> OwnedApis {
        OwnedApis {
            stateful_sets: Api::all(client.clone()),
            config_maps: Api::all(client.clone()),
            services: Api::all(client.clone()),
            disruption_budgets: Api::all(client.clone()),
        }
    }

    fn namespaced(client: &Client, ns: &str) -> OwnedApis {
        OwnedApis {
            stateful_sets: Api::namespaced(client.clone(), ns),
            config_maps: Api::namespaced(client.clone(), ns),
            services: Api::namespaced(client.clone(), ns),
            disruption_budgets: Api::namespaced(client.clone(), ns),
        }
    }
}
