//! Where the routing table comes from: a file polled every 200 ms (tests, benches,
//! local runs) or the `<cluster>-routing` ConfigMap watched through the Kubernetes API
//! (key `routing.json`). Each new document is handed to a callback; whether it is
//! newer than the table in effect is the callback's business.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::operator::names::ROUTING_KEY;
use crate::runtime::shutdown::Shutdown;

/// Interval of the file poll.
pub const FILE_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Errors of a table source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No Kubernetes client could be configured.
    #[error("configuring the Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
}

/// A source of routing tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableSource {
    /// A file, re-read whenever its content changes.
    File(PathBuf),
    /// A ConfigMap.
    ConfigMap {
        /// Its name.
        name: String,
        /// Its namespace.
        namespace: String,
    },
}

impl std::fmt::Display for TableSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TableSource::File(path) => write!(f, "file {}", path.display()),
            TableSource::ConfigMap { name, namespace } => {
                write!(f, "ConfigMap {namespace}/{name} key {ROUTING_KEY}")
            }
        }
    }
}

impl TableSource {
    /// Delivers every new document to `deliver` until `shutdown`.
    pub async fn run(
        self,
        deliver: impl FnMut(&str) + Send,
        shutdown: Shutdown,
    ) -> Result<(), SourceError> {
        tracing::info!(source = %self, "reading the routing table");
        match self {
            TableSource::File(path) => {
                poll_file(path, FILE_POLL_INTERVAL, deliver, shutdown).await;
                Ok(())
            }
            TableSource::ConfigMap { name, namespace } => {
                watch_configmap(name, namespace, deliver, shutdown).await
            }
        }
    }
}

/// Reads `path` every `interval` and delivers its content when it changed.
pub async fn poll_file(
    path: PathBuf,
    interval: Duration,
    mut deliver: impl FnMut(&str),
    shutdown: Shutdown,
) {
    let mut last: Option<String> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            _ = ticker.tick() => {}
        }
        match tokio::fs::read_to_string(&path).await {
            Ok(content) if last.as_deref() != Some(content.as_str()) => {
                deliver(&content);
                last = Some(content);
                warned = false;
            }
            Ok(_) => {}
            Err(error) if !warned => {
                tracing::warn!(path = %path.display(), %error, "reading the routing file");
                warned = true;
            }
            Err(_) => {}
        }
    }
}

/// Watches ConfigMap `namespace/name` and delivers its `routing.json` on every change.
async fn watch_configmap(
    name: String,
    namespace: String,
    mut deliver: impl FnMut(&str),
    shutdown: Shutdown,
) -> Result<(), SourceError> {
    let client = Client::try_default().await?;
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher(api, config).default_backoff().applied_objects();
    tokio::pin!(events);
    let mut last: Option<String> = None;
    loop {
        let event = tokio::select! {
            () = shutdown.wait() => return Ok(()),
            event = events.next() => event,
        };
        match event {
            None => return Ok(()),
            Some(Err(error)) => {
                tracing::warn!(%error, configmap = %name, "watching the routing ConfigMap")
            }
            Some(Ok(configmap)) => {
                let document = configmap
                    .data
                    .as_ref()
                    .and_then(|data| data.get(ROUTING_KEY));
                match document {
                    Some(doc) if last.as_deref() != Some(doc.as_str()) => {
                        deliver(doc);
                        last = Some(doc.clone());
                    }
                    Some(_) => {}
                    None => {
                        tracing::warn!(configmap = %name, "the routing ConfigMap has no {ROUTING_KEY}")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn file_changes_are_delivered_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routing.json");
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let shutdown = Shutdown::new();
        let task = {
            let seen = Arc::clone(&seen);
            let path = path.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                poll_file(
                    path,
                    Duration::from_millis(10),
                    move |doc| seen.lock().unwrap().push(doc.to_owned()),
                    shutdown,
                )
                .await
            })
        };
        let wait_for = |n: usize| {
            let seen = Arc::clone(&seen);
            async move {
                for _ in 0..500 {
                    if seen.lock().unwrap().len() >= n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                panic!("no delivery {n}");
            }
        };
        std::fs::write(&path, "one").unwrap();
        wait_for(1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::fs::write(&path, "two").unwrap();
        wait_for(2).await;
        shutdown.trigger();
        task.await.unwrap();
        assert_eq!(*seen.lock().unwrap(), ["one", "two"]);
    }

    #[test]
    fn sources_display() {
        let source = TableSource::ConfigMap {
            name: "c-routing".into(),
            namespace: "ns".into(),
        };
        assert_eq!(
            source.to_string(),
            "ConfigMap ns/c-routing key routing.json"
        );
    }
}
