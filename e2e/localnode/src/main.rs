//! `localnode`: a process-backed Kubernetes node for ringmaster's local cluster.
//!
//! It registers a Node, binds unscheduled Pods to itself and runs every container
//! as local processes (each in its own mount namespace, volumes bind-mounted at
//! their `mountPath`s), gives each Pod a loopback IP, runs probes and reports
//! status. It also provisions PersistentVolumes for claims, proxies ClusterIP
//! Services on their loopback virtual IPs and serves container logs to the
//! apiserver (`kubectl logs`).

mod config;
mod kubelet_api;
mod node;
mod pods;
mod sandbox;
mod services;
mod storage;

use std::sync::Arc;

use clap::Parser;

/// Command-line flags of the node agent.
#[derive(Parser, Debug, Clone)]
#[command(name = "localnode", version, about)]
pub struct Args {
    /// Kubeconfig with the node's credentials.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: std::path::PathBuf,
    /// Name of the Node object to register.
    #[arg(long, default_value = "localnode")]
    pub node_name: String,
    /// Directory for pod sandboxes, logs and persistent volumes.
    #[arg(long)]
    pub state_dir: std::path::PathBuf,
    /// Loopback range pod IPs are allocated from.
    #[arg(long, default_value = "127.10.0.0/16")]
    pub pod_cidr: ipnet::Ipv4Net,
    /// YAML file mapping container images to local executables.
    #[arg(long)]
    pub images: std::path::PathBuf,
    /// Port of the kubelet API (container logs) on 127.0.0.1.
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// PEM certificate the kubelet API serves.
    #[arg(long)]
    pub kubelet_cert: std::path::PathBuf,
    /// PEM key of the kubelet API certificate.
    #[arg(long)]
    pub kubelet_key: std::path::PathBuf,
    /// CA that signs the apiserver's kubelet client certificate.
    #[arg(long)]
    pub client_ca: std::path::PathBuf,
    /// Address (host:port) the apiserver really listens on; the `kubernetes`
    /// Service's virtual IP is forwarded there.
    #[arg(long)]
    pub apiserver: String,
    /// First container restart delay in milliseconds (doubles up to the cap).
    #[arg(long, default_value_t = 1000)]
    pub restart_backoff_ms: u64,
    /// Cap of the container restart delay in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub restart_backoff_cap_ms: u64,
    /// Emit logs as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

/// Everything the node's tasks share.
pub struct Ctx {
    /// Client with the node's credentials.
    pub client: kube::Client,
    /// The parsed flags.
    pub args: Args,
    /// The image map.
    pub images: config::ImageMap,
}

fn main() -> anyhow::Result<()> {
    // The sandbox helper re-executes this binary; it must not start a runtime.
    if std::env::args().nth(1).as_deref() == Some(sandbox::SUBCOMMAND) {
        return sandbox::main();
    }
    let args = Args::parse();
    init_tracing(args.log_json);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    let images = config::ImageMap::load(&args.images)?;
    let ctx = Arc::new(Ctx {
        client,
        args,
        images,
    });

    let shutdown = shutdown_signal();
    tokio::select! {
        r = node::run(ctx.clone()) => r?,
        r = pods::run(ctx.clone()) => r?,
        r = services::run(ctx.clone()) => r?,
        r = storage::run(ctx.clone()) => r?,
        r = kubelet_api::run(ctx.clone()) => r?,
        () = shutdown => {}
    }
    tracing::info!("shutting down: stopping every pod");
    pods::shutdown(ctx).await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
