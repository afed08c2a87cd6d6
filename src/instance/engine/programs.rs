//! Locating the server programs.
//!
//! The engine images put them on `PATH`. Debian and Ubuntu hosts keep
//! PostgreSQL's programs in `/usr/lib/postgresql/<major>/bin`, off `PATH`:
//! the newest major found there is the fallback.

use std::path::{Path, PathBuf};

/// `program` in the directories of `PATH`.
pub fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

/// `program` in the newest `<root>/<major>/bin` (e.g. `/usr/lib/postgresql`).
pub fn in_versioned_dirs(root: &Path, program: &str) -> Option<PathBuf> {
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let p = e.path().join("bin").join(program);
            is_executable(&p).then_some((major, p))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, p)| p)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn finds_sh_on_path_and_newest_major() {
        assert!(on_path("sh").is_some());
        assert!(on_path("ringmaster-no-such-program").is_none());

        let root = tempfile::tempdir().unwrap();
        for major in ["9", "15", "16", "notanumber"] {
            let bin = root.path().join(major).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            let p = bin.join("postgres");
            std::fs::write(&p, "").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // 16 without the program: 15 wins
        std::fs::remove_file(root.path().join("16/bin/postgres")).unwrap();
        assert_eq!(
            in_versioned_dirs(root.path(), "postgres"),
            Some(root.path().join("15/bin/postgres"))
        );
    }
}
