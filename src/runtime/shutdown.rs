//! Graceful shutdown: a future that resolves on SIGTERM or SIGINT, and a
//! [`Shutdown`] handle that every component of the process shares.
//!
//! ```no_run
//! # async fn run() -> Result<(), ringmaster::runtime::shutdown::ShutdownError> {
//! use ringmaster::runtime::shutdown::Shutdown;
//! let shutdown = Shutdown::new();
//! shutdown.trigger_on_signal()?; // SIGTERM / SIGINT trigger it
//! let http_stop = shutdown.clone().wait_owned(); // hand to a server
//! shutdown.wait().await; // or select! on it in a loop
//! # drop(http_stop); Ok(()) }
//! ```

use std::fmt;
use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Errors installing the signal handlers.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// The handler for a signal could not be installed.
    #[error("installing the {signal} handler: {source}")]
    Install {
        /// The signal, e.g. `SIGTERM`.
        signal: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The signal that asked the process to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: Kubernetes stopping the Pod.
    Terminate,
    /// SIGINT: Ctrl-C.
    Interrupt,
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Interrupt => "SIGINT",
        })
    }
}

/// A future that resolves with the first SIGTERM or SIGINT received.
///
/// The handlers are installed when this is called (not when first polled), so no
/// signal sent after the call is missed.
pub fn stop_signal() -> Result<impl Future<Output = StopSignal> + Send + 'static, ShutdownError> {
    let mut term = install(SignalKind::terminate(), "SIGTERM")?;
    let mut int = install(SignalKind::interrupt(), "SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => StopSignal::Terminate,
            _ = int.recv() => StopSignal::Interrupt,
        }
    })
}

fn install(
    kind: SignalKind,
    name: &'static str,
) -> Result<tokio::signal::unix::Signal, ShutdownError> {
    signal(kind).map_err(|source| ShutdownError::Install {
        signal: name,
        source,
    })
}

/// A shared stop flag. Cheap to clone; all clones see the same state. Once triggered
/// it stays triggered and every waiter, present or future, is woken.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A handle that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every component to stop.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether shutdown was asked for.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown is asked for.
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }

    /// Like [`wait`](Self::wait) but owning its handle: `'static`, for servers and tasks.
    pub fn wait_owned(self) -> impl Future<Output = ()> + Send + 'static {
        self.token.cancelled_owned()
    }

    /// The underlying token, for APIs that take a [`CancellationToken`].
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Spawns a task that triggers this handle on SIGTERM or SIGINT (logging which).
    /// Must be called inside a Tokio runtime.
    pub fn trigger_on_signal(&self) -> Result<tokio::task::JoinHandle<()>, ShutdownError> {
        let stop = stop_signal()?;
        let this = self.clone();
        Ok(tokio::spawn(async move {
            tokio::select! {
                signal = stop => {
                    tracing::info!(%signal, "stop signal received, shutting down");
                    this.trigger();
                }
                () = this.wait() => {}
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn trigger_wakes_every_clone() {
        let shutdown = Shutdown::new();
        let waiter = tokio::spawn(shutdown.clone().wait_owned());
        assert!(!shutdown.is_triggered());
        shutdown.clone().trigger();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(shutdown.is_triggered());
        // A waiter that arrives later resolves at once.
        tokio::time::timeout(Duration::from_secs(1), shutdown.wait())
            .await
            .unwrap();
    }

    #[test]
    fn signal_names() {
        assert_eq!(StopSignal::Terminate.to_string(), "SIGTERM");
        assert_eq!(StopSignal::Interrupt.to_string(), "SIGINT");
    }

    #[tokio::test]
    async fn sigterm_triggers_shutdown() {
        let shutdown = Shutdown::new();
        // The handler is installed before the signal is sent, so the process survives it.
        let task = shutdown.trigger_on_signal().unwrap();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(5), shutdown.wait())
            .await
            .expect("SIGTERM did not trigger shutdown");
        task.await.unwrap();
    }
}
