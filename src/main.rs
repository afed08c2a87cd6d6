//! `ringmaster`: one binary, one subcommand per component.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "ringmaster",
    version,
    about = "Sharded Redis and PostgreSQL clusters on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controllers (ShardedCluster, Shard, ShardMigration).
    Operator(ringmaster::operator::OperatorArgs),
    /// Run the in-pod agent that initialises and supervises one database server.
    Instance(ringmaster::instance::InstanceArgs),
    /// Write the CustomResourceDefinitions generated from the Rust types.
    Crdgen(ringmaster::crdgen::CrdgenArgs),
    /// Copy this binary to a path (the init container that installs the agent).
    CopySelf(ringmaster::runtime::copy_self::CopySelfArgs),
    /// Run the Redis router: a RESP proxy routing commands by key through the ring.
    Router(ringmaster::router::RouterArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Operator(args) => ringmaster::operator::main(args),
        Command::Instance(args) => ringmaster::instance::main(args),
        Command::Crdgen(args) => ringmaster::crdgen::main(args),
        Command::CopySelf(args) => ringmaster::runtime::copy_self::main(args),
        Command::Router(args) => ringmaster::router::main(args),
    }
}
