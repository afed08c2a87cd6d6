//! `ringmaster instance`: the in-pod agent that runs one database server.

/// Flags of `ringmaster instance`.
#[derive(clap::Args, Debug)]
pub struct InstanceArgs {}

/// Runs the agent.
pub fn main(_args: InstanceArgs) -> anyhow::Result<()> {
    anyhow::bail!("instance: not implemented yet")
}
