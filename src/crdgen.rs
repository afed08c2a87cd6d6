//! `ringmaster crdgen`: writes the CustomResourceDefinitions generated from the types.

/// Flags of `ringmaster crdgen`.
#[derive(clap::Args, Debug)]
pub struct CrdgenArgs {
    /// Directory the CRD files are written to.
    #[arg(long, default_value = "crds")]
    pub out_dir: std::path::PathBuf,
}

/// Runs `ringmaster crdgen`.
pub fn main(_args: CrdgenArgs) -> anyhow::Result<()> {
    anyhow::bail!("crdgen: not implemented yet")
}
