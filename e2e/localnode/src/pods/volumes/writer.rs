//! Atomic writes of projected volume contents, like the kubelet's
//! `AtomicWriter`: files go to a fresh `..<stamp>/` directory, the `..data`
//! symlink is switched to it with a rename, and each top-level name is a
//! symlink `name -> ..data/name`, so readers never see a half-written update.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// One file of a projected volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileData {
    /// Contents.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// The files of a projected volume by relative path.
pub type Files = BTreeMap<String, FileData>;

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Replaces the contents of `dir` with `files`.
pub fn write(dir: &Path, files: &Files, fs_group: Option<u32>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let stamp = new_stamp();
    let staged = dir.join(&stamp);
    std::fs::create_dir(&staged)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))?;
    for (rel, f) in files {
        write_file(&staged, rel, f, fs_group)?;
    }
    let old = std::fs::read_link(dir.join(DATA)).ok();
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA))?;
    let tops = top_level_names(files);
    link_top_level(dir, &tops)?;
    remove_stale_links(dir, &tops)?;
    if let Some(old) = old.filter(|o| o.as_os_str() != stamp.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

fn new_stamp() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("..{nanos}_{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn write_file(base: &Path, rel: &str, f: &FileData, fs_group: Option<u32>) -> std::io::Result<()> {
    let path = base.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, &f.data)?;
    let mut mode = f.mode & 0o7777;
    if let Some(gid) = fs_group {
        nix::unistd::chown(&path, None, Some(nix::unistd::Gid::from_raw(gid)))?;
        mode |= 0o440;
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
}

/// The first path component of every file.
fn top_level_names(files: &Files) -> BTreeSet<String> {
    files
        .keys()
        .filter_map(|k| k.split('/').next())
        .map(str::to_string)
        .collect()
}

fn link_top_level(dir: &Path, tops: &BTreeSet<String>) -> std::io::Result<()> {
    for name in tops {
        let link = dir.join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => continue,
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&link)?,
            Ok(_) => std::fs::remove_file(&link)?,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(format!("{DATA}/{name}"), &link)?;
    }
    Ok(())
}

fn remove_stale_links(dir: &Path, tops: &BTreeSet<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") || tops.contains(&name) {
            continue;
        }
        if entry.file_type()?.is_symlink() {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str, u32)]) -> Files {
        entries
            .iter()
            .map(|(p, d, m)| {
                (
                    p.to_string(),
                    FileData {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn writes_and_swaps_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        write(
            &dir,
            &files(&[("a", "1", 0o644), ("sub/b", "2", 0o600)]),
            None,
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        let mode = std::fs::metadata(dir.join("sub/b"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let first = std::fs::read_link(dir.join("..data")).unwrap();

        write(&dir, &files(&[("a", "3", 0o644)]), None).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "3");
        assert!(
            std::fs::symlink_metadata(dir.join("sub")).is_err(),
            "stale link removed"
        );
        assert!(!dir.join(first).exists(), "old generation removed");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "a, ..data and one generation: {names:?}");
    }
}
