//! The routing table in effect, swapped atomically, and the version barrier.
//!
//! Each installed table is a *generation*. A command takes a [`Lease`] on the current
//! generation before it is routed and keeps it until its reply (including the target
//! write of a dual write) is complete. A generation counts its leases; once a newer
//! generation is installed, the old one can get no new lease (leases are taken under
//! the read lock, installs swap under the write lock), so its count only falls.
//!
//! Version `V` is reported as *applied* once every generation older than `V` has no
//! lease left: then no command routed by an older table is still running, which is
//! the barrier the migration saga waits for (see `docs/migration.md`). A command held
//! by a frozen range gives its lease back while it waits and takes one on the newer
//! generation when it routes again.

use std::ops::Deref;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::sync::{Notify, watch};

/// One installed table and its lease count.
#[derive(Debug)]
struct Generation<T> {
    version: i64,
    value: T,
    leases: AtomicUsize,
    drained: Notify,
}

impl<T> Generation<T> {
    /// Resolves once the generation has no lease left.
    async fn wait_drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.leases.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A command's hold on the generation it was routed by; dereferences to the table.
#[derive(Debug)]
pub struct Lease<T> {
    generation: Arc<Generation<T>>,
}

impl<T> Lease<T> {
    /// The version of the leased table.
    pub fn version(&self) -> i64 {
        self.generation.version
    }
}

impl<T> Deref for Lease<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.generation.value
    }
}

impl<T> Drop for Lease<T> {
    fn drop(&mut self) {
        if self.generation.leases.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.generation.drained.notify_waiters();
        }
    }
}

/// The table in effect and the applied version. Shared by every session.
#[derive(Debug)]
pub struct TableHandle<T> {
    current: RwLock<Option<Arc<Generation<T>>>>,
    /// Generations replaced but maybe still leased.
    retiring: Mutex<Vec<Arc<Generation<T>>>>,
    applied: AtomicI64,
    installed: watch::Sender<i64>,
}

impl<T> Default for TableHandle<T> {
    fn default() -> Self {
        Self {
            current: RwLock::new(None),
            retiring: Mutex::new(Vec::new()),
            applied: AtomicI64::new(0),
            installed: watch::Sender::new(0),
        }
    }
}

impl<T: Send + Sync + 'static> TableHandle<T> {
    /// A handle without a table.
    pub fn new() -> Self {
        Self::default()
    }

    /// A lease on the current table; `None` before the first install.
    pub fn lease(&self) -> Option<Lease<T>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        let generation = Arc::clone(current.as_ref()?);
        generation.leases.fetch_add(1, Ordering::AcqRel);
        Some(Lease { generation })
    }

    /// The version of the current table (0 before the first).
    pub fn installed_version(&self) -> i64 {
        *self.installed.borrow()
    }

    /// The newest version `V` such that no command routed by a table older than `V`
    /// is still running (0 before the first table).
    pub fn applied_version(&self) -> i64 {
        self.applied.load(Ordering::Acquire)
    }

    /// A receiver of the installed version, to wait for a newer table.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.installed.subscribe()
    }

    /// Installs `value` as version `version` when it is newer than the current table,
    /// and returns a future that resolves once the version is applied (drive it, e.g.
    /// spawned); `None` (and nothing changes) when it is not newer.
    pub fn install(
        self: &Arc<Self>,
        version: i64,
        value: T,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let generation = Arc::new(Generation {
            version,
            value,
            leases: AtomicUsize::new(0),
            drained: Notify::new(),
        });
        {
            let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
            if current.as_ref().is_some_and(|c| c.version >= version) {
                return None;
            }
            if let Some(old) = current.replace(generation) {
                self.retiring
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(old);
            }
        }
        self.installed.send_replace(version);
        let this = Arc::clone(self);
        Some(async move { this.apply(version).await })
    }

    /// Waits until every generation older than `version` is drained, then reports
    /// `version` as applied.
    async fn apply(&self, version: i64) {
        let older: Vec<_> = self
            .retiring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|g| g.version < version)
            .cloned()
            .collect();
        for generation in &older {
            generation.wait_drained().await;
        }
        self.retiring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|g| g.leases.load(Ordering::Acquire) > 0);
        self.applied.fetch_max(version, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn first_install_applies_at_once() {
        let handle = Arc::new(TableHandle::<&str>::new());
        assert!(handle.lease().is_none());
        assert_eq!(handle.applied_version(), 0);
        handle.install(1, "one").unwrap().await;
        assert_eq!(handle.applied_version(), 1);
        assert_eq!(*handle.lease().unwrap(), "one");
    }

    #[tokio::test]
    async fn older_or_equal_versions_are_ignored() {
        let handle = Arc::new(TableHandle::<&str>::new());
        handle.install(2, "two").unwrap().await;
        assert!(handle.install(2, "again").is_none());
        assert!(handle.install(1, "one").is_none());
        assert_eq!(*handle.lease().unwrap(), "two");
        assert_eq!(handle.installed_version(), 2);
    }

    #[tokio::test]
    async fn version_is_applied_only_after_older_leases_end() {
        let handle = Arc::new(TableHandle::<&str>::new());
        handle.install(1, "one").unwrap().await;
        let old = handle.lease().unwrap();
        let apply = tokio::spawn(handle.install(2, "two").unwrap());
        // New commands see version 2 at once …
        let new = handle.lease().unwrap();
        assert_eq!((*new, new.version()), ("two", 2));
        // … but 2 is not applied while a command of version 1 runs.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(handle.applied_version(), 1);
        drop(old);
        tokio::time::timeout(Duration::from_secs(5), apply)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(handle.applied_version(), 2);
        drop(new);
    }

    #[tokio::test]
    async fn barrier_covers_every_older_generation() {
        let handle = Arc::new(TableHandle::<u8>::new());
        handle.install(1, 1).unwrap().await;
        let v1 = handle.lease().unwrap();
        let apply2 = tokio::spawn(handle.install(2, 2).unwrap());
        let apply3 = tokio::spawn(handle.install(3, 3).unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(handle.applied_version(), 1, "a v1 command still runs");
        drop(v1);
        apply3.await.unwrap();
        apply2.await.unwrap();
        assert_eq!(handle.applied_version(), 3);
    }

    #[tokio::test]
    async fn subscribers_see_new_versions() {
        let handle = Arc::new(TableHandle::<u8>::new());
        let mut versions = handle.subscribe();
        handle.install(4, 0).unwrap().await;
        versions.changed().await.unwrap();
        assert_eq!(*versions.borrow(), 4);
    }
}
