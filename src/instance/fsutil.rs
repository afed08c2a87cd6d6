//! Crash-safe file writes: temporary file, fsync, rename, fsync of the directory.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::error::InstanceError;

/// Writes `contents` to `path` atomically with permissions `mode`: readers see
/// the old file or the new one, never a part, and the file never exists with
/// wider permissions than `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), InstanceError> {
    let tmp = path.with_extension("ringmaster-tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| InstanceError::io("creating", &tmp, e))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(|e| InstanceError::io("writing", &tmp, e))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .map_err(|e| InstanceError::io("setting permissions of", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| InstanceError::io("renaming to", path, e))?;
    sync_parent(path)
}

/// Flushes the directory entry of `path` to disk.
pub fn sync_parent(path: &Path) -> Result<(), InstanceError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| InstanceError::io("syncing directory", dir, e))
}

/// Creates `dir` (and its parents) when missing; a directory created here gets `mode`.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), InstanceError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| InstanceError::io("creating directory", dir, e))
}

/// Removes `path` whether it is a file or a directory tree; missing is fine.
pub fn remove_any(path: &Path) -> Result<(), InstanceError> {
    let result = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    result.map_err(|e| InstanceError::io("removing", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.conf");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn ensure_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        ensure_dir(&d, 0o700).unwrap();
        ensure_dir(&d, 0o700).unwrap();
        fs::write(d.join("x"), "x").unwrap();
        remove_any(&dir.path().join("a")).unwrap();
        remove_any(&dir.path().join("a")).unwrap();
        assert!(!dir.path().join("a").exists());
    }
}
