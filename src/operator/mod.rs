//! `ringmaster operator`: the controllers.

/// Flags of `ringmaster operator`.
#[derive(clap::Args, Debug)]
pub struct OperatorArgs {}

/// Runs the operator.
pub fn main(_args: OperatorArgs) -> anyhow::Result<()> {
    anyhow::bail!("operator: not implemented yet")
}
