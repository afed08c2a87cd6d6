//! The data directory and its initialisation marker.
//!
//! Initialisation is decided by one file, written last: a directory without it
//! was never initialised or was interrupted half-way, and is cleaned and done
//! again; a directory with it keeps its data on every later start.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::EngineKind;
use super::error::InstanceError;
use super::fsutil;

/// Name of the marker file in the data directory.
pub const MARKER: &str = ".ringmaster-initialised";

/// Content of the marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Marker {
    /// Engine the directory holds.
    pub engine: String,
    /// When initialisation finished (RFC 3339).
    pub initialised_at: String,
}

/// What a start finds in the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitState {
    /// Initialised earlier: keep the data.
    Initialised(Marker),
    /// Nothing of ours yet.
    Empty,
    /// An interrupted initialisation left these entries behind.
    Partial(Vec<PathBuf>),
}

/// The data directory of one instance.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Its path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the marker file.
    pub fn marker_path(&self) -> PathBuf {
        self.root.join(MARKER)
    }

    /// Inspects the directory; `owned` are the entries an engine's
    /// initialisation creates.
    pub fn state(&self, engine: EngineKind, owned: &[&str]) -> Result<InitState, InstanceError> {
        if let Some(marker) = self.read_marker()? {
            if marker.engine != engine.as_str() {
                return Err(InstanceError::EngineMismatch {
                    path: self.root.clone(),
                    found: marker.engine,
                    expected: engine.as_str(),
                });
            }
            if let Some(missing) = owned
                .iter()
                .map(|n| self.root.join(n))
                .find(|p| !p.exists())
            {
                return Err(InstanceError::io(
                    "the data directory is marked initialised but misses",
                    missing,
                    std::io::ErrorKind::NotFound.into(),
                ));
            }
            return Ok(InitState::Initialised(marker));
        }
        let leftovers: Vec<PathBuf> = owned
            .iter()
            .map(|name| self.root.join(name))
            .filter(|p| p.symlink_metadata().is_ok())
            .collect();
        Ok(if leftovers.is_empty() {
            InitState::Empty
        } else {
            InitState::Partial(leftovers)
        })
    }

    /// Creates the directory if needed (mode 0700).
    pub fn ensure(&self) -> Result<(), InstanceError> {
        fsutil::ensure_dir(&self.root, 0o700)
    }

    /// Removes what an interrupted initialisation left.
    pub fn clean(&self, leftovers: &[PathBuf]) -> Result<(), InstanceError> {
        leftovers.iter().try_for_each(|p| fsutil::remove_any(p))
    }

    /// Records that initialisation finished: the last step of it.
    pub fn mark_initialised(&self, engine: EngineKind) -> Result<Marker, InstanceError> {
        let marker = Marker {
            engine: engine.as_str().into(),
            initialised_at: jiff::Timestamp::now().to_string(),
        };
        let json = serde_json::to_vec_pretty(&marker).expect("a marker serialises");
        fsutil::write_atomic(&self.marker_path(), &json, 0o600)?;
        Ok(marker)
    }

    fn read_marker(&self) -> Result<Option<Marker>, InstanceError> {
        let path = self.marker_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                InstanceError::io("parsing", path, std::io::Error::other(e.to_string()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(InstanceError::io("reading", path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_partial_initialised() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::new(tmp.path().join("data"));
        dd.ensure().unwrap();
        assert_eq!(
            dd.state(EngineKind::Redis, &["redis"]).unwrap(),
            InitState::Empty
        );

        std::fs::create_dir(dd.root().join("redis")).unwrap();
        std::fs::write(dd.root().join("unrelated"), "keep").unwrap();
        let state = dd.state(EngineKind::Redis, &["redis"]).unwrap();
        let InitState::Partial(left) = state else {
            panic!("expected partial, got {state:?}")
        };
        assert_eq!(left, vec![dd.root().join("redis")]);
        dd.clean(&left).unwrap();
        assert!(!dd.root().join("redis").exists());
        assert!(
            dd.root().join("unrelated").exists(),
            "unknown entries are kept"
        );

        let m = dd.mark_initialised(EngineKind::Redis).unwrap();
        let err = dd.state(EngineKind::Redis, &["redis"]).unwrap_err();
        assert!(err.to_string().contains("misses"), "{err}");
        std::fs::create_dir(dd.root().join("redis")).unwrap();
        assert_eq!(
            dd.state(EngineKind::Redis, &["redis"]).unwrap(),
            InitState::Initialised(m)
        );
    }

    #[test]
    fn other_engine_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::new(tmp.path());
        dd.mark_initialised(EngineKind::Postgres).unwrap();
        std::fs::create_dir(dd.root().join("redis")).unwrap();
        let err = dd.state(EngineKind::Redis, &["redis"]).unwrap_err();
        assert!(
            err.to_string().contains("initialised for postgres"),
            "{err}"
        );
    }
}
