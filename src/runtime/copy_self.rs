//! `ringmaster copy-self`: installs this binary into a shared volume.
//!
//! The runtime image has no shell and no `cp`; the init container of every
//! database Pod runs this to put the agent where the database container runs it.

use std::path::PathBuf;

use anyhow::Context;

/// Flags of `ringmaster copy-self`.
#[derive(clap::Args, Debug)]
pub struct CopySelfArgs {
    /// Where to write the binary (its directory must exist).
    #[arg(long)]
    pub to: PathBuf,
}

/// Copies the running executable to `args.to`, executable by everyone, atomically.
pub fn main(args: CopySelfArgs) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("locating the running binary")?;
    let tmp = args.to.with_extension("tmp");
    std::fs::copy(&me, &tmp)
        .with_context(|| format!("copying {} to {}", me.display(), tmp.display()))?;
    set_mode(&tmp, 0o755)?;
    std::fs::rename(&tmp, &args.to)
        .with_context(|| format!("moving the copy to {}", args.to.display()))?;
    println!("installed {}", args.to.display());
    Ok(())
}

fn set_mode(path: &std::path::Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("making {} executable", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_the_running_binary_executable() {
        let dir = std::env::temp_dir().join(format!("copy-self-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let to = dir.join("ringmaster");
        main(CopySelfArgs { to: to.clone() }).unwrap();
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&to).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::metadata(&to).unwrap().len(),
            std::fs::metadata(std::env::current_exe().unwrap())
                .unwrap()
                .len()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
