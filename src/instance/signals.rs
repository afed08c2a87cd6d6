//! SIGTERM and SIGINT: the request to stop.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::error::InstanceError;

/// Cancels `shutdown` on the first SIGTERM or SIGINT; later ones are logged.
pub fn forward(shutdown: CancellationToken) -> Result<(), InstanceError> {
    let listen = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|source| InstanceError::Io {
            action: "listening for",
            path: name.into(),
            source,
        })
    };
    let mut term = listen(SignalKind::terminate(), "SIGTERM")?;
    let mut int = listen(SignalKind::interrupt(), "SIGINT")?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if shutdown.is_cancelled() {
                tracing::info!(signal = name, "already stopping");
            } else {
                tracing::info!(signal = name, "stopping");
                shutdown.cancel();
            }
        }
    });
    Ok(())
}
