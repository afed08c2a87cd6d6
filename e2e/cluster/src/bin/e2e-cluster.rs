//! `e2e-cluster`: runs ringmaster's local Kubernetes cluster.
//!
//! * `run`    — start a cluster in the foreground; prints `READY <cluster.json>`.
//! * `up`     — start one in the background and wait until it is ready.
//! * `down`   — stop the one of a directory and wait until it is gone.
//! * `status` — show the one of a directory.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ringmaster_e2e::{bins, daemon, supervisor};

#[derive(Parser, Debug)]
#[command(name = "e2e-cluster", about = "ringmaster's local Kubernetes cluster")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start a cluster in the foreground; stop it with SIGTERM/SIGINT (or EOF on
    /// stdin with --lifeline-stdin).
    Run {
        /// Cluster directory (default: ${TMPDIR:-/tmp}/ringmaster-e2e/<slot>-<pid>).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Tear the cluster down when stdin reaches EOF (the parent exited).
        #[arg(long)]
        lifeline_stdin: bool,
        /// Use this slot (0..32) instead of the first free one.
        #[arg(long)]
        slot: Option<u8>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Start a cluster in the background and wait until it is ready.
    Up {
        /// Cluster directory.
        #[arg(long, default_value_os_t = daemon::default_dir())]
        dir: PathBuf,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Stop the cluster of a directory and wait until every process is gone.
    Down {
        /// Cluster directory.
        #[arg(long, default_value_os_t = daemon::default_dir())]
        dir: PathBuf,
    },
    /// Show the cluster of a directory (exit status 1 if none runs).
    Status {
        /// Cluster directory.
        #[arg(long, default_value_os_t = daemon::default_dir())]
        dir: PathBuf,
    },
}

/// Flags about the node agent.
#[derive(Args, Debug, Clone)]
struct NodeArgs {
    /// Run only the control plane, without the node agent.
    #[arg(long, env = "RINGMASTER_E2E_NO_NODE")]
    no_node: bool,
    /// Name of the Node.
    #[arg(long, default_value = "localnode")]
    node_name: String,
    /// The node's image map.
    #[arg(long, default_value_os_t = bins::workspace_root().join("e2e/images.yaml"))]
    images: PathBuf,
}

impl NodeArgs {
    fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--node-name={}", self.node_name),
            format!("--images={}", self.images.display()),
        ];
        if self.no_node {
            args.push("--no-node".into());
        }
        args
    }
}

fn main() {
    let cli = Cli::parse();
    let code = match dispatch(cli.command) {
        Ok(code) => code,
        Err(err) => {
            // stderr may be a pipe nobody reads any more: never panic on it.
            let _ = writeln!(std::io::stderr(), "e2e-cluster: {err:#}");
            1
        }
    };
    std::process::exit(code);
}

fn dispatch(cmd: Cmd) -> anyhow::Result<i32> {
    match cmd {
        Cmd::Run {
            dir,
            lifeline_stdin,
            slot,
            node,
        } => supervisor::run(supervisor::RunOptions {
            dir,
            lifeline_stdin,
            node: !node.no_node,
            node_name: node.node_name,
            images: node.images,
            slot,
        }),
        Cmd::Up { dir, node } => daemon::up(&dir, &node.to_args()).map(|()| 0),
        Cmd::Down { dir } => daemon::down(&dir).map(|()| 0),
        Cmd::Status { dir } => daemon::status(&dir).map(|running| if running { 0 } else { 1 }),
    }
}
