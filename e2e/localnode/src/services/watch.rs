//! Reflector helper shared by the controllers of this crate.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt as _;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A background task that is aborted when this handle is dropped.
#[derive(Debug)]
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Mirrors every object of `api` into a [`Store`], calling `changed.notify_one()` after
/// each watch event. The watch is retried with backoff; errors are logged. The returned
/// guard stops the watch when dropped.
pub fn reflect<K>(api: Api<K>, changed: Arc<Notify>) -> (Store<K>, AbortOnDrop)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&K::DynamicType::default()), error = %e, "watch failed")
                }
            }
        }
    });
    (reader, AbortOnDrop(task))
}

/// Waits until the store has seen its initial list.
pub async fn ready<K>(store: &Store<K>) -> anyhow::Result<()>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    store
        .wait_until_ready()
        .await
        .map_err(|_| anyhow::anyhow!("the watch of {} stopped", std::any::type_name::<K>()))
}
